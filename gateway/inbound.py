"""Classify an inbound reply (SMS text or e-mail) by what it asks of us.

Role: decide whether a reply is an opt-out, an opt-in, a request for help, an
e-mail auto-reply, or something else. Pure: no I/O, no consent change; the
caller acts on the returned :class:`Classification`. It never raises on any
``str`` and runs in time linear in the text.

The rule, in order (the first that applies decides):

1. **Auto-reply.** An e-mail is an auto-reply when a header says so or its
   subject does (header names are case-insensitive; values are compared
   case-insensitively):

   - ``Auto-Submitted`` with any value other than ``no`` (RFC 3834 section 5;
     e.g. ``auto-replied``, ``auto-generated``). An empty value is ignored;
   - ``X-Autoreply`` or ``X-Autorespond`` with a value other than empty,
     ``no``, ``false`` or ``0``;
   - ``Precedence: auto_reply``, ``bulk`` or ``junk``;
   - a subject starting with "Out of office", "Automatic reply", "Auto:" or
     "Autoreply".

   An auto-reply is never an opt-out, opt-in or help request, whatever its body
   says (field case CO-06: a vacation reply was once recorded as an
   unsubscribe). A positive signal is required because this verdict overrides a
   "stop" in the body. Rules "auto-reply header", "auto-reply subject".
2. **Normalise** the text: Unicode NFKC, case-fold, strip accents (so "ARRÊT"
   matches "arret"), turn every character that is not a letter or a digit
   (punctuation, symbols, emoji) into a space, collapse whitespace. Keywords
   are normalised the same way, so "don't text me" is matched as "don t text
   me" and "opt-out" as "opt out".
3. **Empty.** Text that is empty after normalisation is OTHER (rule "empty
   text").
4. **Too long.** Text longer than 1,000 characters after normalisation is
   OTHER (rule "text too long"): keyword replies are short messages.
5. **Keywords.** The text is read as a sequence of words. It is a keyword
   reply when

   a. it is exactly one keyword (rule "single keyword"; a keyword of several
      words, such as "opt out", counts as one), or
   b. it starts with a keyword, every later word is another keyword or a
      courtesy word, and it has at most 6 words, a keyword or courtesy phrase
      of several words counting as one (rule "keyword with courtesy words",
      or "several keywords" when there are no courtesy words).

   So "STOP PLEASE", "Stop. Thank you", "STOP STOP" and "Stop!!!" are
   opt-outs, while "Count me in! We have got to STOP this bill", "I will stop
   by later" and "don't stop" are OTHER: a keyword inside an unrelated
   sentence does not count.
6. **Intent.** If the keywords found have more than one intent, opt-out wins
   (fail safe; rule "opt-out wins"). Between opt-in and help, help wins, as a
   grant of consent must be unambiguous. Otherwise the keywords' intent
   decides. The reported keyword is the first one of the winning intent.
7. Anything else is OTHER (rule "no leading keyword").

Keywords (matched after normalisation, so accents and case do not matter):

- Opt-out: the FCC's revocation words, 47 CFR 64.1200(a)(10) as adopted by
  FCC 24-24 (2024): stop, quit, end, revoke, opt out, cancel, unsubscribe;
  also stopall, stop all, optout, unsub, remove me, do not text, don't text
  me (and "dont text me"); Spanish alto, parar, cancelar, no más, baja;
  French arrêt, désabonner, stop sms; Portuguese parar, sair, cancelar;
  German abmelden; Italian basta.
- Opt-in: start, unstop, yes, subscribe, resume.
- Help: help, info; Spanish ayuda; French aide.

Courtesy words: please, pls, thanks, thank, you, thx, now, me, it, all,
messages, texts, texting, sending, asap, ok, okay, sorry; Spanish por favor,
gracias; French merci, s'il vous plaît, svp; Portuguese obrigado, obrigada;
German danke; Italian grazie.

OTHER is not a finding that the sender did not revoke consent: the FCC accepts
a revocation "by any reasonable means", so a reply classified OTHER may still
need a person to read it.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["Classification", "Intent", "classify", "normalise"]

_log = logging.getLogger(__name__)


class Intent(StrEnum):
    """What an inbound reply asks of us."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    AUTO_REPLY = "auto_reply"
    OTHER = "other"


@dataclass(frozen=True)
class Classification:
    """The intent of a reply, the keyword and the rule that decided it.

    ``keyword`` is the normalised keyword, "" for OTHER and AUTO_REPLY.
    """

    intent: Intent
    keyword: str
    rule: str


_RULE_SINGLE: Final = "single keyword"
_RULE_COURTESY: Final = "keyword with courtesy words"
_RULE_SEVERAL: Final = "several keywords"
_RULE_OPT_OUT_WINS: Final = "opt-out wins"
_RULE_AUTO_HEADER: Final = "auto-reply header"
_RULE_AUTO_SUBJECT: Final = "auto-reply subject"
_RULE_EMPTY: Final = "empty text"
_RULE_TOO_LONG: Final = "text too long"
_RULE_NO_KEYWORD: Final = "no leading keyword"

_MAX_CHARS: Final = 1000
_MAX_WORDS: Final = 6

# Auto-reply signals (RFC 3834 section 5 for Auto-Submitted; the others are
# de-facto headers and subjects of common mail systems).
_AUTO_SUBMITTED: Final = "auto-submitted"
_AUTO_FLAG_HEADERS: Final = frozenset({"x-autoreply", "x-autorespond"})
_FLAG_OFF: Final = frozenset({"", "no", "false", "0"})
_PRECEDENCE: Final = "precedence"
_AUTO_PRECEDENCE: Final = frozenset({"auto_reply", "bulk", "junk"})
_AUTO_SUBJECTS: Final = ("out of office", "automatic reply", "auto:", "autoreply")


def normalise(text: str) -> str:
    """The text as keywords are matched: NFKC, case-folded, accents stripped,
    anything but letters and digits turned into spaces, whitespace collapsed.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFKD", folded)
    bare = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    composed = unicodedata.normalize("NFC", bare)
    spaced = "".join(c if c.isalnum() else " " for c in composed)
    return " ".join(spaced.split())


def _phrases(*raw: str) -> frozenset[tuple[str, ...]]:
    return frozenset(tuple(normalise(phrase).split()) for phrase in raw)


# 47 CFR 64.1200(a)(10) as adopted by FCC 24-24, then common English variants,
# then localised words: es alto..baja, fr arrêt..stop sms, pt sair (parar and
# cancelar as es), de abmelden, it basta.
_OPT_OUT: Final = _phrases(
    "stop", "quit", "end", "revoke", "opt out", "cancel", "unsubscribe",
    "stopall", "stop all", "optout", "unsub", "remove me", "do not text",
    "don't text me", "dont text me",
    "alto", "parar", "cancelar", "no más", "baja",
    "arrêt", "désabonner", "stop sms",
    "sair",
    "abmelden",
    "basta",
)  # fmt: skip
_OPT_IN: Final = _phrases("start", "unstop", "yes", "subscribe", "resume")
# es ayuda, fr aide
_HELP: Final = _phrases("help", "info", "ayuda", "aide")

# en, then es por favor, gracias; fr merci..svp; pt obrigado, obrigada;
# de danke; it grazie.
_COURTESY: Final = _phrases(
    "please", "pls", "thanks", "thank", "you", "thx", "now", "me", "it", "all",
    "messages", "texts", "texting", "sending", "asap", "ok", "okay", "sorry",
    "por favor", "gracias",
    "merci", "s'il vous plaît", "svp",
    "obrigado", "obrigada",
    "danke",
    "grazie",
)  # fmt: skip

_KEYWORD_INTENT: Final[Mapping[tuple[str, ...], Intent]] = {
    **dict.fromkeys(_OPT_IN, Intent.OPT_IN),
    **dict.fromkeys(_HELP, Intent.HELP),
    **dict.fromkeys(_OPT_OUT, Intent.OPT_OUT),
}
# When keywords of several intents are found, the first of these wins.
_PRIORITY: Final = (Intent.OPT_OUT, Intent.HELP, Intent.OPT_IN)
_LONGEST: Final = max(len(p) for p in (*_KEYWORD_INTENT, *_COURTESY))


def classify(
    text: str, *, headers: Mapping[str, str] | None = None, subject: str = ""
) -> Classification:
    """Classify an inbound reply; see the module docstring for the rule."""
    result = _classify(text, headers or {}, subject)
    _log.debug(
        "inbound reply classified: intent=%s rule=%s", result.intent, result.rule
    )
    return result


def _classify(text: str, headers: Mapping[str, str], subject: str) -> Classification:
    if _auto_reply_header(headers):
        return Classification(Intent.AUTO_REPLY, "", _RULE_AUTO_HEADER)
    if _auto_reply_subject(subject):
        return Classification(Intent.AUTO_REPLY, "", _RULE_AUTO_SUBJECT)

    normal = normalise(text)
    if not normal:
        return Classification(Intent.OTHER, "", _RULE_EMPTY)
    if len(normal) > _MAX_CHARS:
        return Classification(Intent.OTHER, "", _RULE_TOO_LONG)

    return _classify_words(normal.split())


def _auto_reply_header(headers: Mapping[str, str]) -> bool:
    for name, value in headers.items():
        key = name.strip().casefold()
        token = value.split(";", 1)[0].strip().casefold()
        if key == _AUTO_SUBMITTED and token not in ("", "no"):
            return True
        if key in _AUTO_FLAG_HEADERS and token not in _FLAG_OFF:
            return True
        if key == _PRECEDENCE and token in _AUTO_PRECEDENCE:
            return True
    return False


def _auto_reply_subject(subject: str) -> bool:
    words = unicodedata.normalize("NFKC", subject).casefold().split()
    return " ".join(words).startswith(_AUTO_SUBJECTS)


def _classify_words(words: list[str]) -> Classification:
    units = _units(words)
    if not units or units[0][0] is None or len(units) > _MAX_WORDS:
        return Classification(Intent.OTHER, "", _RULE_NO_KEYWORD)

    keywords = [(intent, phrase) for intent, phrase in units if intent is not None]
    intents = {intent for intent, _ in keywords}
    winner = next(intent for intent in _PRIORITY if intent in intents)
    keyword = next(phrase for intent, phrase in keywords if intent is winner)

    if len(units) == 1:
        rule = _RULE_SINGLE
    elif winner is Intent.OPT_OUT and len(intents) > 1:
        rule = _RULE_OPT_OUT_WINS
    elif len(keywords) == len(units):
        rule = _RULE_SEVERAL
    else:
        rule = _RULE_COURTESY
    return Classification(winner, keyword, rule)


def _units(words: list[str]) -> list[tuple[Intent | None, str]]:
    """Split words into keywords (with their intent) and courtesy phrases
    (intent None), longest match first; [] if some word is neither.

    Stops as soon as the message is known to be too long or not a keyword
    reply, so the work is bounded by the word limit, not the text.
    """
    units: list[tuple[Intent | None, str]] = []
    at = 0
    while at < len(words) and len(units) <= _MAX_WORDS:
        for size in range(min(_LONGEST, len(words) - at), 0, -1):
            phrase = tuple(words[at : at + size])
            if phrase in _KEYWORD_INTENT or phrase in _COURTESY:
                units.append((_KEYWORD_INTENT.get(phrase), " ".join(phrase)))
                at += size
                break
        else:
            return []
    return units
