r"""A seeded, rule-based English -> German parallel corpus, for running the whole translation path
(vocabulary, token batches, beam search, BLEU, checkpoint averaging) on a CPU.

  python -m corpora.translation_generator --output_dir DIR [--num_train 20000 --num_val 500 \
      --num_test 500 --seed 0] [--overwrite]

writes `train.en`, `train.de`, `validation.en`, ... in the `corpora.translation` layout. Not real
language data: a small grammar with a bilingual lexicon (Table 4 numbers are not comparable), but it
has what makes translation more than word substitution. German nouns have three genders that
decide the article and the adjective ending, which also depend on the case (nominative subject,
accusative object, dative after "mit"/"in", "in dem" contracted to "im"); a sentence that starts
with an adverb puts the verb before the subject (verb-second order); a clause joined with "because"
puts its verb last; compound nouns ("the door of the house" -> "die Haustür") are one German word,
so the subword vocabulary has something to split. Some words have two German translations, drawn at
random each time ("car" -> "Auto" or "Wagen", which also changes the article; "often" -> "oft" or
"häufig"), so, as with real references, no model can reach BLEU 100. Sentences have 4 to about 30
words and end in an unspaced full stop (detokenised text, as sacreBLEU expects).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from lra import cli
from lra.core import DataError
from lra.files import writing_outputs

#: English noun -> (German noun, gender 'm'/'f'/'n').
NOUNS = {
  'dog': ('Hund', 'm'),
  'cat': ('Katze', 'f'),
  'house': ('Haus', 'n'),
  'car': ('Auto', 'n'),
  'man': ('Mann', 'm'),
  'woman': ('Frau', 'f'),
  'child': ('Kind', 'n'),
  'garden': ('Garten', 'm'),
  'book': ('Buch', 'n'),
  'table': ('Tisch', 'm'),
  'door': ('Tür', 'f'),
  'city': ('Stadt', 'f'),
  'teacher': ('Lehrer', 'm'),
  'bird': ('Vogel', 'm'),
  'window': ('Fenster', 'n'),
  'street': ('Straße', 'f'),
  'friend': ('Freund', 'm'),
  'apple': ('Apfel', 'm'),
  'letter': ('Brief', 'm'),
  'school': ('Schule', 'f'),
  'train': ('Zug', 'm'),
  'picture': ('Bild', 'n'),
  'river': ('Fluss', 'm'),
  'lamp': ('Lampe', 'f'),
}
#: Compounds: (English head, English modifier) -> German word (gender of the head).
COMPOUNDS = {
  ('door', 'house'): 'Haustür',
  ('window', 'car'): 'Autofenster',
  ('book', 'school'): 'Schulbuch',
  ('garden', 'school'): 'Schulgarten',
  ('door', 'car'): 'Autotür',
  ('lamp', 'street'): 'Straßenlampe',
  ('table', 'garden'): 'Gartentisch',
  ('picture', 'city'): 'Stadtbild',
}
ADJECTIVES = {
  'small': 'klein',
  'big': 'groß',
  'old': 'alt',
  'new': 'neu',
  'red': 'rot',
  'green': 'grün',
  'beautiful': 'schön',
  'quiet': 'leise',
  'young': 'jung',
  'dark': 'dunkel',
  'happy': 'froh',
  'strange': 'seltsam',
}
#: English verb (3rd person singular) -> German verb (3rd person singular); all take an object.
VERBS = {
  'sees': 'sieht',
  'likes': 'mag',
  'finds': 'findet',
  'buys': 'kauft',
  'paints': 'malt',
  'visits': 'besucht',
  'needs': 'braucht',
  'knows': 'kennt',
  'watches': 'beobachtet',
  'loves': 'liebt',
}
#: Other German translations of some nouns (drawn as often as the first one).
NOUN_ALTERNATIVES = {
  'car': ('Wagen', 'm'),
  'street': ('Gasse', 'f'),
  'picture': ('Gemälde', 'n'),
  'house': ('Gebäude', 'n'),
  'river': ('Strom', 'm'),
  'lamp': ('Leuchte', 'f'),
}
#: Other German translations of some adjectives, verbs and adverbs.
WORD_ALTERNATIVES = {
  'groß': 'riesig',
  'schön': 'hübsch',
  'leise': 'still',
  'froh': 'glücklich',
  'sieht': 'erblickt',
  'kauft': 'erwirbt',
  'mag': 'schätzt',
  'oft': 'häufig',
  'jetzt': 'nun',
}
ADVERBS = {'today': 'heute', 'often': 'oft', 'now': 'jetzt', 'again': 'wieder', 'later': 'später'}
PREPOSITIONS = {'with': 'mit', 'in': 'in'}

# Article and strong/weak adjective endings by (article, case, gender).
_ARTICLES = {
  ('the', 'nom'): {'m': 'der', 'f': 'die', 'n': 'das'},
  ('the', 'acc'): {'m': 'den', 'f': 'die', 'n': 'das'},
  ('the', 'dat'): {'m': 'dem', 'f': 'der', 'n': 'dem'},
  ('a', 'nom'): {'m': 'ein', 'f': 'eine', 'n': 'ein'},
  ('a', 'acc'): {'m': 'einen', 'f': 'eine', 'n': 'ein'},
  ('a', 'dat'): {'m': 'einem', 'f': 'einer', 'n': 'einem'},
}
_ENDINGS = {
  ('the', 'nom'): {'m': 'e', 'f': 'e', 'n': 'e'},
  ('the', 'acc'): {'m': 'en', 'f': 'e', 'n': 'e'},
  ('the', 'dat'): {'m': 'en', 'f': 'en', 'n': 'en'},
  ('a', 'nom'): {'m': 'er', 'f': 'e', 'n': 'es'},
  ('a', 'acc'): {'m': 'en', 'f': 'e', 'n': 'es'},
  ('a', 'dat'): {'m': 'en', 'f': 'en', 'n': 'en'},
}


def _pick(rng: random.Random, word: str) -> str:
  """`word` or its alternative (`WORD_ALTERNATIVES`), each with probability 1/2."""
  return rng.choice((word, WORD_ALTERNATIVES[word])) if word in WORD_ALTERNATIVES else word


def _adjective(stem: str, ending: str) -> str:
  """German adjective with its ending ('dunkel' + 'e' -> 'dunkle', 'leise' + 'en' -> 'leisen')."""
  if stem.endswith('el') and ending:
    stem = stem[:-2] + 'l'
  if stem.endswith('e') and ending.startswith('e'):
    stem = stem[:-1]
  return stem + ending


def noun_phrase(rng: random.Random, case: str) -> tuple[list[str], list[str]]:
  """A random (English, German) noun phrase in `case` ('nom', 'acc' or 'dat')."""
  article = rng.choice(('the', 'a'))
  adjective = rng.choice(list(ADJECTIVES)) if rng.random() < 0.5 else None
  if rng.random() < 0.15:
    (head, modifier), german = rng.choice(list(COMPOUNDS.items()))
    gender = NOUNS[head][1]
    english_noun = [head, 'of', 'the', modifier]
  else:
    head = rng.choice(list(NOUNS))
    german, gender = rng.choice((NOUNS[head], NOUN_ALTERNATIVES.get(head, NOUNS[head])))
    english_noun = [head]
  english = [article, *([adjective] if adjective else []), *english_noun]
  words = [_ARTICLES[article, case][gender]]
  if adjective:
    words.append(_adjective(_pick(rng, ADJECTIVES[adjective]), _ENDINGS[article, case][gender]))
  return english, [*words, german]


def _prepositional(rng: random.Random) -> tuple[list[str], list[str]]:
  preposition = rng.choice(list(PREPOSITIONS))
  english, german = noun_phrase(rng, 'dat')
  if preposition == 'in' and german[0] == 'dem':
    german = ['im', *german[1:]]
  else:
    german = [PREPOSITIONS[preposition], *german]
  return [preposition, *english], german


def clause(rng: random.Random, verb_last: bool = False) -> tuple[list[str], list[str]]:
  """A random clause: subject, verb, object, optional prepositional phrase and adverb; German
  verb-second (after a leading adverb, the subject follows the verb) or verb-last order."""
  subject_en, subject_de = noun_phrase(rng, 'nom')
  object_en, object_de = noun_phrase(rng, 'acc')
  verb = rng.choice(list(VERBS))
  verb_de = _pick(rng, VERBS[verb])
  extra_en, extra_de = _prepositional(rng) if rng.random() < 0.4 else ([], [])
  adverb = rng.choice(list(ADVERBS)) if rng.random() < 0.4 else None
  adverb_de = [_pick(rng, ADVERBS[adverb])] if adverb else []
  english = [*subject_en, verb, *object_en, *extra_en]
  if verb_last:
    german = [*subject_de, *adverb_de, *object_de, *extra_de, verb_de]
    return english + ([adverb] if adverb else []), german
  if adverb and rng.random() < 0.5:
    english = [adverb, *english]
    german = [*adverb_de, verb_de, *subject_de, *object_de, *extra_de]
  else:
    english = english + ([adverb] if adverb else [])
    german = [*subject_de, verb_de, *adverb_de, *object_de, *extra_de]
  return english, german


def sentence_pair(rng: random.Random) -> tuple[str, str]:
  """One random (English, German) sentence pair."""
  english, german = clause(rng)
  roll = rng.random()
  if roll < 0.2:
    more_en, more_de = clause(rng)
    english, german = [*english, 'and', *more_en], [*german, 'und', *more_de]
  elif roll < 0.35:
    more_en, more_de = clause(rng, verb_last=True)
    english, german = [*english, 'because', *more_en], [*german, ',', 'weil', *more_de]
  english = [
    'an' if word == 'a' and following[0] in 'aeiou' else word
    for word, following in zip(english, [*english[1:], 'x'])
  ]
  text_en = ' '.join(english)
  text_de = ' '.join(german).replace(' ,', ',')
  return text_en[0].upper() + text_en[1:] + '.', text_de[0].upper() + text_de[1:] + '.'


def write(
  output_dir: str | Path,
  *,
  num_train: int = 20000,
  num_val: int = 500,
  num_test: int = 500,
  seed: int = 0,
  overwrite: bool = False,
) -> Path:
  """Writes `<split>.en` and `<split>.de` for train, validation and test (distinct sentences).

  Returns:
    The output directory.

  Raises:
    DataError: a split file exists, was not written with these settings, and `overwrite` is
      False.
  """
  out = Path(output_dir)
  counts = {'train': num_train, 'validation': num_val, 'test': num_test}
  paths = [out / f'{split}.{lang}' for split in counts for lang in ('en', 'de')]
  settings = dict(**counts, seed=seed)
  with writing_outputs(paths, overwrite, settings) as todo:
    if not todo:
      return out
    out.mkdir(parents=True, exist_ok=True)
    rng, seen = random.Random(seed), set()
    for split, count in counts.items():
      pairs = []
      while len(pairs) < count:
        pair = sentence_pair(rng)
        if pair[0] not in seen:
          seen.add(pair[0])
          pairs.append(pair)
      for lang, side in (('en', 0), ('de', 1)):
        (out / f'{split}.{lang}').write_text(
          ''.join(pair[side] + '\n' for pair in pairs), encoding='utf-8'
        )
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--output_dir', required=True, type=cli.folder)
  parser.add_argument('--num_train', type=cli.integer(1), default=20000)
  parser.add_argument('--num_val', type=cli.integer(1), default=500)
  parser.add_argument('--num_test', type=cli.integer(1), default=500)
  parser.add_argument('--seed', type=cli.integer(0), default=0)
  parser.add_argument(
    '--overwrite', action='store_true', help='replace existing split files (default: refuse)'
  )
  args = parser.parse_args(argv)
  try:
    out = write(
      args.output_dir,
      num_train=args.num_train,
      num_val=args.num_val,
      num_test=args.num_test,
      seed=args.seed,
      overwrite=args.overwrite,
    )
  except DataError as e:
    cli.refuse(e)
  counts = {'train': args.num_train, 'validation': args.num_val, 'test': args.num_test}
  listing = ', '.join(f'{split}.en/.de ({count} pairs)' for split, count in counts.items())
  print(f'{out}: the English-German corpus, {listing}')


if __name__ == '__main__':
  main()
