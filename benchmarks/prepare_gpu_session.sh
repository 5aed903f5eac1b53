#!/usr/bin/env bash
# Prepares, on a machine with git and pip, the two git-ignored folders that a GPU session of
# `python -m benchmarks.gpu_session` carries to a GPU machine that has neither the authors' code
# nor network access:
#
#   .anchor/torch_luna_anchor.py                 the PyTorch anchor (times the authors' Luna)
#   .anchor/fairseq_luna/luna_attention.py       the authors' two module files, from a snapshot
#   .anchor/fairseq_luna/luna_sentence_encoder.py  of XuezheMax/fairseq-apollo (never committed)
#   .anchor/SNAPSHOT_COMMIT                      the snapshot commit they came from
#   .whl/*.whl                                   the pure-Python packages that luna_jax needs and
#                                                the GPU image lacks (ml-collections,
#                                                tensorboardX, sacremoses), in requirements.txt's
#                                                ranges
#
# Usage (from anywhere; the folders land in the repository root):
#
#   bash benchmarks/prepare_gpu_session.sh SNAPSHOT ANCHOR_SCRIPT
#
#   SNAPSHOT       a bare git repository (or a clone's .git) of XuezheMax/fairseq-apollo
#   ANCHOR_SCRIPT  the PyTorch anchor script, torch_luna_anchor.py
#
# Environment: PYTHON (default python3) runs `pip download`; the wheels are for CPython 3.12 on
# x86-64 Linux (the GPU image's Python). Exits non-zero, naming the step, if any step fails.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
snapshot=$1
anchor_script=$2
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

[[ -f $anchor_script ]] || { echo "prepare_gpu_session: no anchor script at $anchor_script" >&2; exit 1; }
commit=$(git --git-dir="$snapshot" rev-parse HEAD) \
  || { echo "prepare_gpu_session: $snapshot is not a git repository" >&2; exit 1; }

rm -rf "$root/.anchor"
mkdir -p "$root/.anchor/fairseq_luna"
cp "$anchor_script" "$root/.anchor/torch_luna_anchor.py"
for f in luna_attention.py luna_sentence_encoder.py; do
  git --git-dir="$snapshot" show "$commit:fairseq/modules/$f" > "$root/.anchor/fairseq_luna/$f"
done
echo "$commit" > "$root/.anchor/SNAPSHOT_COMMIT"

rm -rf "$root/.whl"
mkdir -p "$root/.whl"
requirements=()
for name in ml-collections tensorboardX sacremoses; do
  line=$(grep -i "^$name[><=~ ]" "$root/requirements.txt") \
    || { echo "prepare_gpu_session: $name is not in requirements.txt" >&2; exit 1; }
  requirements+=("$line")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d "$root/.whl" "${requirements[@]}"

echo "prepared $root/.anchor (fairseq-apollo $commit) and $root/.whl:"
ls "$root/.anchor" "$root/.anchor/fairseq_luna" "$root/.whl"
