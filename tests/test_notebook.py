"""The Colab quick-start notebook runs top to bottom (small sizes) in a fresh kernel."""

import os

import nbclient
import nbformat

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO_ROOT, 'notebooks', 'quickstart.ipynb')


def test_quickstart_notebook_runs(monkeypatch, tmp_path):
  monkeypatch.setenv('LUNA_NOTEBOOK_SMALL', '1')
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  # The notebook's workspace (tempfile.mkdtemp) goes where pytest cleans up, not into /tmp.
  monkeypatch.setenv('TMPDIR', str(tmp_path))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  assert all(not cell.get('outputs') for cell in notebook.cells if cell.cell_type == 'code'), (
    'commit the notebook without outputs'
  )
  nbclient.NotebookClient(
    notebook, timeout=300, kernel_name='python3', resources={'metadata': {'path': REPO_ROOT}}
  ).execute()
  outputs = ''.join(
    output.get('text', '')
    for cell in notebook.cells
    if cell.cell_type == 'code'
    for output in cell.outputs
  )
  assert 'backend cpu' in outputs and 'local devices: cpu:cpu' in outputs  # The set-up cell's.
  assert 'pack rows sum to 1: True | pack weight on padding: 0.0' in outputs
  assert 'test accuracy' in outputs and 'Luna-16' in outputs
  assert [p.name.startswith('luna_quickstart_') for p in tmp_path.iterdir()] == [True]
