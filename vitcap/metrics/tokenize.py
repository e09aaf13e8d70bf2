"""COCO-style caption tokenisation without Java.

The COCO caption evaluation (``pycocoevalcap``) runs every caption through Stanford CoreNLP 3.4.1's
``PTBTokenizer -preserveLines -lowerCase`` and then drops the tokens in its ``PUNCTUATIONS`` list. All the
scores (BLEU, ROUGE-L, CIDEr-D) are computed on that output, so a caption metric that tokenises differently
reports different numbers. :func:`coco_tokenize` re-implements the relevant part of that JFlex lexer
(``PTBLexer.flex``) as a longest-match scanner over a subset of its rules, then applies the same
lower-casing and punctuation removal.

What it reproduces (checked against the Java tokenizer shipped with pycocoevalcap):

- punctuation split off words (``dog.`` -> ``dog .``) and removed when in ``PUNCTUATIONS``;
- clitics: ``'s 're 've 'd 'm 'll n't`` (``can't`` -> ``ca n't``, ``won't`` -> ``wo n't``), also with the
  Unicode apostrophe, and ``cannot``/``gonna``/``gotta``/``wanna``/``lemme``/``gimme``/``'tis``/``'twas``
  split as Stanford does;
- words kept whole: hyphenated (``black-and-white``, ``t-shirt``), ``o'clock``, ``'90s``, ``rock 'n' roll``,
  numbers (``3.5``, ``3,000``, ``10:30``, ``1/2``), abbreviations and acronyms (``mr.``, ``st.``, ``u.s.``,
  ``p.m.``, ``etc.``), URLs, e-mail addresses, ``AT&T``;
- quotes of every kind mapped to the LaTeX forms and removed; Unicode dashes/ellipses removed;
- brackets mapped to ``-LRB-``/``-RRB-``/``-LSB-``/``-RSB-``/``-LCB-``/``-RCB-`` and, because CoreNLP
  lower-cases them to ``-lrb-`` etc. *before* pycocoevalcap compares them with its upper-case list, **kept**
  (a real quirk of the COCO evaluation, reproduced on purpose);
- ``%``, ``$``, ``#``, ``&``, ``?!``, ``!!`` and other symbols not in ``PUNCTUATIONS`` kept as tokens;
  ``£`` -> ``#``, ``€`` -> ``$``, ``¢`` -> ``cents``, ``½`` -> ``1/2`` (PTB3 escaping).

Checked against the Java tokenizer on 17,320 captions (the Flickr8k-mini captions as written, de-tokenised, and
with quotes, clitics, abbreviations, numbers, brackets, symbols and Unicode punctuation inserted or glued on):
17,304 identical. Known differences (rare in captions):

- CoreNLP's rules for phone numbers, file names, "likely URLs" without a scheme, SGML with attributes,
  Asian smileys and swear-word masking are simplified or missing;
- characters outside the Basic Multilingual Plane (emoji) are dropped, as Java does, but other characters
  Java calls "untokenizable" are kept here as one-character tokens;
- a one-letter acronym before a sentence-initial word (``letter A. The``) loses its period only when that
  word is in the same caption; Java also looks across the newline into the *next* caption;
- URLs glued to surrounding text and a few other glued-punctuation combinations split differently;
- ``str.lower`` and Java's ``toLowerCase`` differ for a handful of non-ASCII letters.

Tokenising is idempotent for ordinary captions, but not always (Java is not either: ``y'all`` -> ``y' all`` ->
``y all``), so give the metrics raw captions, not already tokenised ones, unless you pass ``tokenize=False``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

__all__ = ["PUNCTUATIONS", "coco_tokenize", "coco_tokenize_batch", "prepare_batch"]

# Copied from pycocoevalcap/tokenizer/ptbtokenizer.py. The bracket names are upper case there but CoreNLP
# lower-cases them (-lowerCase), so they never match and stay in the COCO output.
PUNCTUATIONS: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# ---------------------------------------------------------------------------------------------------------
# Macros of PTBLexer.flex (CoreNLP 3.4.1 behaviour, verified empirically). JFlex is %caseless for literals
# but not for character classes, so every rule is compiled with re.IGNORECASE and case-sensitive classes
# are wrapped in (?-i:...).
# ---------------------------------------------------------------------------------------------------------
# A Unicode letter: \w minus digits, "_" and the other numeric characters (½, ², ①) that \w also accepts.
_L = r"[^\W\d_\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff\u2776-\u2793]"
_AN = rf"(?:{_L}|\d)"  # letter or digit
_SPACENL = r"[ \t\u00a0\u2000-\u200a\u3000\r\n\u2028\u2029\x0b\x0c\x85]"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOSETC = r"(?:['\u0092\u2019`\u0091\u2018\u201b]|&apos;)"
_WORD = rf"{_L}{_AN}*(?:[.!?]{_L}{_AN}*)*"
_SWORD = r"(?-i:[A-Za-z\u00ad]*[A-MO-Za-mo-z])"
_REDAUX = rf"{_APOS}(?:(?-i:[msdMSD])|re|ve|ll)"
_SREDAUX = rf"n{_APOSETC}t"
_NUM = r"\d+(?:[.:,\u00ad\u066b\u066c]\d+)*|\d*(?:[.:,\u066b\u066c]\d+)+"
_HYPHEN = r"[-_\u058a\u2010\u2011]"
_THING = (
    rf"(?:(?-i:[dDoOlL]){_APOSETC}{_AN})?{_AN}+"
    rf"(?:{_HYPHEN}(?:(?-i:[dDoOlL]){_APOSETC}{_AN})?{_AN}+)*"
)
_ACRO = r"(?-i:[A-Za-z])(?:\.(?-i:[A-Za-z]))*"
_ACRO2 = r"(?-i:[A-Za-z])(?:\.(?-i:[A-Za-z]))+"
_HTHING = rf"{_AN}(?-i:[A-Za-z0-9.,\u00ad])*(?:-(?:(?-i:[A-Za-z0-9\u00ad])+|{_ACRO2}\.))+"
_ABMONTH = r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
_ABDAYS = r"Mon|Tue|Tues|Wed|Thu|Thurs|Fri"
_ABSTATE = (
    r"Ala|Ariz|(?-i:A)z|(?-i:A)rk|Calif|Colo|Conn|Ct|Dak|(?-i:D)el|Fla|Ga|(?-i:I)ll|Ind|Kans?|Ky|(?-i:L)a|"
    r"(?-i:M)ass|Md|Mich|Minn|(?-i:M)iss|Mo|Mont|Neb|Nev|Okla|(?-i:O)re|(?-i:P)a|Penn|Tenn|(?-i:T)ex|Va|Vt|"
    r"(?-i:W)ash|Wisc?|Wyo"
)
_ABCOMP = r"Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Dept|Bhd|Assn|Univ|Intl|Sys"
_ABPTIT = r"Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq"
_ABBREV1 = rf"(?:{_ABMONTH}|{_ABDAYS}|{_ABSTATE}|{_ABCOMP}|tel|est|ext|sq|{_ABPTIT}|etc|al|seq)\."
_ABTITLE = (
    r"Mr|Mrs|Ms|(?-i:M)iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Mt|"
    r"Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|M|MM|Mme|Mmes|Mlle|Mlles"
)
_ABCOMP2 = r"Invt|Elec|Natl|M[ft]g"
_ABBREV2 = rf"(?:{_ABTITLE}|vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|{_ACRO}|{_ABCOMP2})\."
_ABBREV3 = r"(?:ca|figs?|prop|nos?|art|bldg|pp|op)\."
# Sentence-initial words after which an acronym's period also ends the sentence (first letter upper case).
_SENT_STARTERS = (
    "About|According|Additionally|After|An|A|As|At|But|Did|During|Earlier|He|Her|Here|How|However|If|In|It|"
    "Last|Many|More|Mr\\.|Ms\\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Their|Then|There|These|"
    "They|This|We|When|While|What|Who|Why|Yet|You"
)
_SENT_STARTER_RE = "|".join(f"(?-i:{w[0]}){w[1:]}" for w in _SENT_STARTERS.split("|"))
_APOWORD = (
    rf"{_APOS}n{_APOS}?|(?-i:[lLdDjJ]){_APOS}|Dunkin{_APOS}|somethin{_APOS}|ol{_APOS}|{_APOS}em|"
    rf"(?-i:[A-HJ-XZn]){_APOSETC}{_L}{{2}}{_L}*|{_APOS}(?-i:[2-9])0s|{_APOS}till?|"
    rf"{_L}+(?-i:[aeiouyAEIOUY]){_APOSETC}(?-i:[aeiouA-Z]){_L}*|{_APOS}cause|cont'd\.?|nor'easter|c'mon|e'er|"
    rf"s'mores|ev'ry|li'l|nat'l|(?-i:O){_APOSETC}o"
)
# JFlex trailing context [^\p{Alpha}]: one character (it counts towards the match length), or the end.
_NOT_LETTER = rf"(?:(?!{_L})[\s\S]|$)"
_SMILEY = r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]"

_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u20ac": "$"}
# Quote characters and what PTB3 (LaTeX quotes) turns them into; all of them end up in PUNCTUATIONS.
_QUOTE_CHARS = "'`\u0092\u0091\u2018\u2019\u201b\u201c\u201d\u201f\u00ab\u00bb\u2039\u203a\u0093\u0094"
_OPEN_QUOTES = {"``": "``", "\u201c": "``", "\u00ab": "``", "\u0093": "``", "\u201f": "``"}

# An action maps the matched token text to (output tokens, number of characters consumed). Most rules
# consume their whole match; a few push characters back like JFlex's yypushback.
_Action = Callable[[str], tuple[list[str], int]]


def _keep(text: str) -> tuple[list[str], int]:
    return [text], len(text)


def _as(replacement: str) -> _Action:
    return lambda text: ([replacement], len(text))


def _pushback(n: int) -> _Action:
    return lambda text: ([text[:-n]], len(text) - n)


def _norm_apos(text: str) -> tuple[list[str], int]:
    # Clitics are re-spelled with the ASCII apostrophe; words such as o’clock keep their Unicode one.
    return [re.sub("[\u0092\u2019]|&apos;", "'", re.sub("[\u0091\u2018\u201b`]", "`", text))], len(text)


def _with_period(text: str) -> tuple[list[str], int]:
    # Sentence-final abbreviations are emitted with their period *and* an extra "." (dropped later).
    return [text, "."], len(text)


def _acronym(text: str) -> tuple[list[str], int]:
    # "I. He ...": a one-letter acronym gives the letter; its period is lexed next time.
    if len(text) == 2:
        return [text[0]], 1
    return [text, "."], len(text)


def _hyphens(text: str) -> tuple[list[str], int]:
    return ["--" if 3 <= len(text) <= 4 else text], len(text)


def _quotes(text: str) -> tuple[list[str], int]:
    return [_OPEN_QUOTES.get(text, "''" if len(text) == 2 or text in "\u201d\u00bb\u0094" else "'")], len(text)


def _frac(text: str) -> tuple[list[str], int]:
    # normalizeSpace turns the space of "3 1/2" into U+00A0, so the token survives pycocoevalcap's split(" ").
    return [text.replace(" ", "\u00a0")], len(text)


def _amp(text: str) -> tuple[list[str], int]:
    return [re.sub("&amp;", "&", text, flags=re.IGNORECASE)], len(text)


def _smiley(text: str) -> tuple[list[str], int]:
    return [text.replace("(", "-LRB-").replace(")", "-RRB-")], len(text)


# (pattern, trailing context or None, action). Order breaks ties between equally long matches, as in
# JFlex; the trailing context counts towards the match length but is not consumed.
_RULES_SPEC: list[tuple[str, str | None, _Action]] = [
    (r"cannot|'twas", None, _pushback(3)),
    (r"'tis|gonna|gotta|lemme|gimme|wanna", None, _pushback(2)),
    (r"</?(?-i:[A-Za-z])[A-Za-z0-9_:.\-]*[ ]*/?>|<[!?][A-Za-z\-][^>\r\n]*>", None, _keep),
    (r"&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, _as("--")),
    (r"&amp;", None, _as("&")),
    (_WORD, _REDAUX, _keep),
    (_SWORD, _SREDAUX, _keep),
    (_WORD, None, _keep),
    (_APOWORD, None, _keep),
    (r"y" + _APOS, _L, _keep),
    (r"(?:https?|ftp):\/\/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},\-]", None, _keep),
    (r"www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}", None, _keep),
    # ",-_" is a character range here, as in the JFlex source: no digits or capitals in these host names.
    (r"(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(?:com|net|org|edu)", None, _keep),
    (
        r"(?:&lt;|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*"
        r"[^ \t\n\f\r\"<>|(){}\[\].,;:\u00a0]+(?:&gt;|>)?",
        None,
        _keep,
    ),  # fmt: skip
    (r"@[a-zA-Z_][a-zA-Z_0-9]*|#[^\W\d_]+", None, _keep),
    (_REDAUX, _NOT_LETTER, _norm_apos),
    (_SREDAUX, _NOT_LETTER, _norm_apos),
    # An ASCII quote before a letter and a non-space ('no', dog'sa) opens a quotation; the two context
    # characters make it beat APOWORD's 'n and a bare clitic, but lose to 'n' (equal length, APOWORD first).
    (r"'", rf"{_L}[^ \t\u00a0\u2000-\u200a\u3000\r\n]", _quotes),
    # A clitic after the Unicode apostrophe splits even before letters: dog’sa -> dog 's a.
    (_REDAUX, None, _norm_apos),
    (r"\d{1,2}[\-/]\d{1,2}[\-/]\d{2,4}", None, _keep),
    (rf"[\-+]?(?:{_NUM})", None, _keep),
    (r"(?:\d{1,4}[- \u00a0])?\d{1,4}(?:\\?/|\u2044)\d{1,4}", None, _frac),
    (r"[\u00bc\u00bd\u00be\u2153\u2154]", None, lambda t: ([_FRACTIONS[t]], 1)),
    (rf"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-|S&P-500|S&Ls|Cap{_APOS}n|c{_APOS}est", None, _keep),
    (r"(?:E|Yahoo|Jeopardy)!", None, _keep),
    (r"c\+\+|[cf]#", None, _keep),
    (rf"{_AN}+(?:-{_L}+){{0,2}}(?:\\?/{_AN}+(?:-{_L}+){{0,2}}){{1,2}}", None, _keep),
    (r"(?-i:[A-Z])*\$|#", None, _keep),
    (
        r"[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
        None,
        lambda t: ([_CURRENCY.get(t, t)], 1),
    ),  # fmt: skip
    # An acronym before a sentence-initial word ("letter A. The ...") also ends the sentence. Java also
    # looks past the newline into the next caption; here each caption is tokenised on its own, as if last.
    (rf"{_ACRO}\.", rf"{_SPACENL}+(?:{_SENT_STARTER_RE})(?:{_SPACENL}|[?!])", _acronym),
    (_ABBREV3, rf"{_SPACENL}?\d", _keep),
    # JFlex's {ABBREV1}/[^][^] beats a longer-looking WORD such as "etc.A".
    (_ABBREV1, r"[\s\S]{2}", _with_period),
    (_ABBREV1, None, _with_period),
    (_ABBREV2, None, _keep),
    (r"'\d\d", _SPACENL, _keep),
    (rf"{_WORD}\.", r"[,;:\u3001]", _keep),
    (r'"|&quot;', None, _as("''")),
    (r"<<|>>", None, _keep),
    (r"<|&lt;", None, _as("<")),
    (r">|&gt;", None, _as(">")),
    (_SMILEY, rf"(?:(?!{_AN})[\s\S]|$)", _smiley),
    (r"\{", None, _as("-LCB-")),
    (r"\}", None, _as("-RCB-")),
    (r"\[", None, _as("-LSB-")),
    (r"\]", None, _as("-RSB-")),
    (r"\(", None, _as("-LRB-")),
    (r"\)", None, _as("-RRB-")),
    (r"-+", None, _hyphens),
    (r"\.\.\.+|[\u0085\u2026]|\.(?: \.)+ \.", None, _as("...")),
    (r"@+|#+|_+", None, _keep),
    (r"\*+", None, _keep),
    (r"[,;:\u3001]", None, _keep),
    (r"[?!]+", None, _keep),
    (r"[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]", None, _keep),
    (r"=+", None, _keep),
    (r"/", None, _keep),
    (_HTHING, None, _keep),
    (_THING, None, _norm_apos),
    (r"(?-i:[A-Z])+(?:(?:&amp;|[+&])(?-i:[A-Z])+)+", None, _amp),
    (rf"[{_QUOTE_CHARS}]{{1,2}}", None, _quotes),
]


def _alternatives(pattern: str) -> list[str]:
    """Split a regex at its top-level ``|``: JFlex takes the longest alternative, Python's ``re`` the first."""
    parts, depth, in_class, start, i = [], 0, False, 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                i += 1
            if pattern[i + 1 : i + 2] == "]":  # a literal "]" first in a class
                i += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*parts, pattern[start:]]


_RULES: list[tuple[re.Pattern[str], _Action]] = [
    (re.compile(f"({alternative})" + (f"(?=({context}))" if context else ""), re.IGNORECASE), action)
    for pattern, context, action in _RULES_SPEC
    for alternative in _alternatives(pattern)
]
_WHITESPACE = re.compile(rf"{_SPACENL}+")
# The overwhelmingly common token: a run of ASCII letters ending at a space. No rule matches longer there
# except the assimilations (gonna ...), so those are excluded from the shortcut.
_PLAIN_WORD = re.compile(rf"[A-Za-z]+(?={_SPACENL}|$)")
_ASSIMILATIONS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])


def _lex(text: str) -> list[str]:
    """Split ``text`` into PTB tokens (before lower-casing and punctuation removal)."""
    tokens: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        space = _WHITESPACE.match(text, pos)
        if space:
            pos = space.end()
            continue
        plain = _PLAIN_WORD.match(text, pos)
        if plain and plain.group().lower() not in _ASSIMILATIONS:
            tokens.append(plain.group())
            pos = plain.end()
            continue
        best_len, best = 0, None
        for regex, action in _RULES:
            m = regex.match(text, pos)
            if m is None:
                continue
            # JFlex picks the longest match counting trailing context; the earlier rule wins ties.
            length = len(m.group(1)) + (len(m.group(2)) if m.lastindex and m.lastindex >= 2 else 0)
            if length > best_len and m.group(1):
                best_len, best = length, (m.group(1), action)
        if best is None:
            # Java drops characters outside the Basic Multilingual Plane (it sees surrogate halves) and
            # control characters; other unknown characters become one-character tokens.
            char = text[pos]
            if ord(char) <= 0xFFFF and char.isprintable():
                tokens.append(char)
            pos += 1
            continue
        out, consumed = best[1](best[0])
        tokens.extend(out)
        pos += consumed
    return tokens


@lru_cache(maxsize=1 << 16)
def coco_tokenize(text: str) -> str:
    """Tokenise one caption the way the COCO caption evaluation does, without Java.

    Equivalent to pycocoevalcap's ``PTBTokenizer().tokenize`` on a single caption: Stanford PTB tokenisation,
    lower-casing, removal of the tokens in :data:`PUNCTUATIONS`. See the module docstring for what is and is
    not reproduced.

    Args:
        text: A raw caption; newlines count as spaces.

    Returns:
        The space-separated tokens (no leading/trailing/double spaces; ``""`` if nothing remains).

    Example:
        >>> coco_tokenize("A man's dog isn't running, it's \\"happy\\".")
        "a man 's dog is n't running it 's happy"
    """
    return " ".join(tok for tok in (t.lower() for t in _lex(text)) if tok not in PUNCTUATIONS)


def coco_tokenize_batch(texts: list[str]) -> list[str]:
    """:func:`coco_tokenize` over a list of captions."""
    return [coco_tokenize(t) for t in texts]


def prepare_batch(
    predictions: Sequence[str], references: Sequence[Sequence[str]], tokenize: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Validate one metric ``update`` batch and optionally COCO-tokenise it.

    Args:
        predictions: One predicted caption per image.
        references: The reference captions of each image, in the same order; at least one per image.
        tokenize: Apply :func:`coco_tokenize` to every caption.

    Returns:
        ``(predictions, references)`` as fresh lists (tokenised if asked).

    Raises:
        TypeError: If a caption list is a bare string or holds non-strings.
        ValueError: If the lengths differ or an image has no reference.
    """
    if isinstance(predictions, str) or not isinstance(predictions, Sequence):
        raise TypeError(f"predictions must be a list of strings, got {type(predictions).__name__}")
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} reference lists")
    for i, (pred, refs) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(pred, str):
            raise TypeError(f"predictions[{i}] must be a string, got {type(pred).__name__}")
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"references[{i}] must be a list of strings, got {type(refs).__name__}")
        if len(refs) == 0:
            raise ValueError(f"references[{i}] is empty: every image needs at least one reference caption")
        if not all(isinstance(r, str) for r in refs):
            raise TypeError(f"references[{i}] must hold only strings")
    if tokenize:
        return [coco_tokenize(p) for p in predictions], [[coco_tokenize(r) for r in refs] for refs in references]
    return list(predictions), [list(refs) for refs in references]
