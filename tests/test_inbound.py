"""Unit and property tests of gateway.inbound: classifying inbound replies."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.inbound import Classification, Intent, classify, normalise

_CASES = {
    case["id"]: case
    for case in json.loads(
        (Path(__file__).parent / "data" / "field-cases.json").read_text("utf-8")
    )
}

OPT_OUT, OPT_IN, HELP = Intent.OPT_OUT, Intent.OPT_IN, Intent.HELP
AUTO, OTHER = Intent.AUTO_REPLY, Intent.OTHER

# Every keyword as the spec lists it, with its normalised form.
_OPT_OUT_KEYWORDS = {
    "stop": "stop",
    "quit": "quit",
    "end": "end",
    "revoke": "revoke",
    "opt out": "opt out",
    "cancel": "cancel",
    "unsubscribe": "unsubscribe",
    "stopall": "stopall",
    "stop all": "stop all",
    "optout": "optout",
    "unsub": "unsub",
    "remove me": "remove me",
    "do not text": "do not text",
    "don't text me": "don t text me",
    "dont text me": "dont text me",
    "alto": "alto",  # es
    "parar": "parar",  # es, pt
    "cancelar": "cancelar",  # es, pt
    "no mas": "no mas",  # es
    "no más": "no mas",  # es
    "baja": "baja",  # es
    "arret": "arret",  # fr
    "arrêt": "arret",  # fr
    "desabonner": "desabonner",  # fr
    "désabonner": "desabonner",  # fr
    "stop sms": "stop sms",  # fr
    "sair": "sair",  # pt
    "abmelden": "abmelden",  # de
    "basta": "basta",  # it
}
_OPT_IN_KEYWORDS = {k: k for k in ("start", "unstop", "yes", "subscribe", "resume")}
_HELP_KEYWORDS = {k: k for k in ("help", "info", "ayuda", "aide")}
_ALL_KEYWORDS = {
    **{raw: (OPT_OUT, kw) for raw, kw in _OPT_OUT_KEYWORDS.items()},
    **{raw: (OPT_IN, kw) for raw, kw in _OPT_IN_KEYWORDS.items()},
    **{raw: (HELP, kw) for raw, kw in _HELP_KEYWORDS.items()},
}
_COURTESY = (
    "please", "pls", "thanks", "thank", "you", "thx", "now", "me", "it", "all",
    "messages", "texts", "texting", "sending", "asap", "ok", "okay", "sorry",
    "por favor", "gracias", "merci", "s'il vous plait", "s'il vous plaît", "svp",
    "obrigado", "obrigada", "danke", "grazie",
)  # fmt: skip


def _case(case_id: str) -> dict[str, Any]:
    case: dict[str, Any] = _CASES[case_id]
    return case


def _variants(raw: str) -> dict[str, str]:
    """The keyword as typed in several ways that must all match."""
    return {
        "as listed": raw,
        "upper": raw.upper(),
        "title": raw.title(),
        "padded": f"  {raw}\t\n",
        "punctuated": f"{raw}!!!",
        "emoji": f"🛑 {raw} 🙏",
        "full-width": "".join(
            chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in raw
        ),
        "hyphenated": raw.replace(" ", "-"),
        "double-spaced": raw.replace(" ", "  "),
    }


@pytest.mark.parametrize(
    ("text", "intent", "keyword"),
    [
        pytest.param(text, intent, kw, id=f"{raw}-{how}")
        for raw, (intent, kw) in _ALL_KEYWORDS.items()
        for how, text in _variants(raw).items()
    ],
)
def test_every_keyword_alone_is_its_intent(
    text: str, intent: Intent, keyword: str
) -> None:
    assert classify(text) == Classification(intent, keyword, "single keyword")


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        pytest.param("ARRÊT", "arret", id="fr-upper-accent"),
        pytest.param("Arrêt.", "arret", id="fr-accent-dot"),
        pytest.param("ARRET", "arret", id="fr-upper-no-accent"),
        pytest.param("DÉSABONNER", "desabonner", id="fr-desabonner-upper"),
        pytest.param("No Más", "no mas", id="es-no-mas-title"),
        pytest.param("NO MAS!", "no mas", id="es-no-mas-bang"),
        pytest.param("Don\u2019t text me", "don t text me", id="curly-apostrophe"),
        pytest.param("OPT-OUT", "opt out", id="opt-out-hyphen"),
        pytest.param("opt_out", "opt out", id="opt-out-underscore"),
        pytest.param("Opt Out.", "opt out", id="opt-out-title"),
        pytest.param("STOP ALL", "stop all", id="stop-all"),
        pytest.param("st\u0301op", "stop", id="combining-accent"),
        pytest.param("\uff33\uff34\uff2f\uff30", "stop", id="full-width"),
        pytest.param("\u00a0stop\u2003", "stop", id="unicode-spaces"),
        pytest.param("«stop»", "stop", id="guillemets"),
        pytest.param("STOP\u200d", "stop", id="zero-width-joiner"),
    ],
)
def test_normalisation_variants_opt_out(text: str, keyword: str) -> None:
    assert classify(text) == Classification(OPT_OUT, keyword, "single keyword")


@pytest.mark.parametrize("courtesy", [pytest.param(c, id=c) for c in _COURTESY])
@pytest.mark.parametrize(
    ("keyword", "intent"),
    [
        pytest.param("STOP", OPT_OUT, id="stop"),
        pytest.param("Opt out", OPT_OUT, id="opt-out"),
        pytest.param("Alto", OPT_OUT, id="alto"),
        pytest.param("START", OPT_IN, id="start"),
        pytest.param("HELP", HELP, id="help"),
    ],
)
def test_keyword_then_each_courtesy_word(
    keyword: str, intent: Intent, courtesy: str
) -> None:
    result = classify(f"{keyword}, {courtesy}!")
    if normalise(f"{keyword} {courtesy}") == "stop all":  # a keyword of its own
        assert result == Classification(OPT_OUT, "stop all", "single keyword")
        return
    assert result == Classification(
        intent, normalise(keyword), "keyword with courtesy words"
    )


@pytest.mark.parametrize(
    ("text", "intent", "keyword", "rule"),
    [
        pytest.param("STOP PLEASE", OPT_OUT, "stop", "keyword with courtesy words",
                     id="stop-please"),
        pytest.param("Stop. Thank you", OPT_OUT, "stop",
                     "keyword with courtesy words", id="stop-thank-you"),
        pytest.param("stop sending me texts please", OPT_OUT, "stop",
                     "keyword with courtesy words", id="five-words"),
        pytest.param("Stop texting me now, thanks!", OPT_OUT, "stop",
                     "keyword with courtesy words", id="six-words"),
        pytest.param("do not text me please thank you", OPT_OUT, "do not text",
                     "keyword with courtesy words", id="phrase-counts-as-one"),
        pytest.param("Baja por favor", OPT_OUT, "baja",
                     "keyword with courtesy words", id="es-baja-por-favor"),
        pytest.param("Cancelar, gracias", OPT_OUT, "cancelar",
                     "keyword with courtesy words", id="es-cancelar-gracias"),
        pytest.param("Arrêt s'il vous plaît", OPT_OUT, "arret",
                     "keyword with courtesy words", id="fr-arret-svp-phrase"),
        pytest.param("STOP SMS merci", OPT_OUT, "stop sms",
                     "keyword with courtesy words", id="fr-stop-sms-merci"),
        pytest.param("sair obrigada", OPT_OUT, "sair",
                     "keyword with courtesy words", id="pt-sair-obrigada"),
        pytest.param("Abmelden, danke", OPT_OUT, "abmelden",
                     "keyword with courtesy words", id="de-abmelden-danke"),
        pytest.param("basta grazie", OPT_OUT, "basta",
                     "keyword with courtesy words", id="it-basta-grazie"),
        pytest.param("Sorry, unsubscribe", OTHER, "", "no leading keyword",
                     id="courtesy-first-is-not-leading"),
        pytest.param("yes please", OPT_IN, "yes", "keyword with courtesy words",
                     id="yes-please"),
        pytest.param("Ayuda por favor", HELP, "ayuda",
                     "keyword with courtesy words", id="es-ayuda-por-favor"),
        pytest.param("STOP STOP", OPT_OUT, "stop", "several keywords",
                     id="stop-stop"),
        pytest.param("Stop!!!", OPT_OUT, "stop", "single keyword", id="stop-bangs"),
        pytest.param("stop unsubscribe", OPT_OUT, "stop", "several keywords",
                     id="two-opt-out-keywords"),
        pytest.param("stop stop stop please", OPT_OUT, "stop",
                     "keyword with courtesy words", id="repeated-with-courtesy"),
    ],
)  # fmt: skip
def test_courtesy_rule(text: str, intent: Intent, keyword: str, rule: str) -> None:
    assert classify(text) == Classification(intent, keyword, rule)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("stop please please please please please please", id="7-words"),
        pytest.param("stop sending me texts now please thanks", id="7-courtesy"),
        pytest.param("STOP STOP STOP STOP STOP STOP STOP", id="7-keywords"),
    ],
)
def test_more_than_six_words_is_other(text: str) -> None:
    assert classify(text) == Classification(OTHER, "", "no leading keyword")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Count me in! We have got to STOP this bill", id="bill"),
        pytest.param("I will stop by later", id="stop-by-later"),
        pytest.param("don't stop", id="dont-stop"),
        pytest.param("end of the month?", id="end-of-month"),
        pytest.param("yes I'd like to stop by", id="yes-stop-by"),
        pytest.param("stop by the store", id="leading-stop-unrelated"),
        pytest.param("Can't stop won't stop", id="cant-stop"),
        pytest.param("Please stop", id="courtesy-before-keyword"),
        pytest.param("cancel my order", id="cancel-my-order"),
        pytest.param("What time does the sale end", id="sale-end"),
        pytest.param("Quit your job and travel!", id="quit-your-job"),
        pytest.param("Help me find the store", id="help-me-find"),
        pytest.param("Yes we can meet tomorrow", id="yes-sentence"),
        pytest.param("start time is 9am?", id="start-time"),
        pytest.param("info@example.com", id="info-address"),
        pytest.param("stopwatch", id="keyword-prefix-of-word"),
        pytest.param("nonstop", id="keyword-suffix-of-word"),
        pytest.param("unstoppable", id="unstop-prefix"),
        pytest.param("the end", id="article-before-end"),
        pytest.param("si", id="es-si-is-not-opt-in"),
        pytest.param("sí", id="es-si-accent-is-not-opt-in"),
        pytest.param("no", id="no-alone"),
        pytest.param("mas", id="mas-alone"),
        pytest.param("thanks", id="courtesy-only"),
        pytest.param("por favor", id="courtesy-phrase-only"),
        pytest.param("s'il vous plait", id="fr-courtesy-only"),
        pytest.param("12345", id="digits"),
        pytest.param("stop2", id="keyword-with-digit"),
    ],
)
def test_buried_or_missing_keyword_is_other(text: str) -> None:
    assert classify(text) == Classification(OTHER, "", "no leading keyword")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        pytest.param("yes stop", "opt-out wins", id="yes-stop"),
        pytest.param("START STOP", "opt-out wins", id="start-stop"),
        pytest.param("subscribe, unsubscribe", "opt-out wins", id="sub-unsub"),
        pytest.param("help stop", "opt-out wins", id="help-stop"),
        pytest.param("stop yes please", "opt-out wins", id="stop-yes-please"),
        pytest.param("info yes quit", "opt-out wins", id="three-intents"),
    ],
)
def test_opt_out_wins(text: str, rule: str) -> None:
    assert classify(text).intent is OPT_OUT
    assert classify(text).rule == rule


def test_opt_out_wins_reports_the_opt_out_keyword() -> None:
    assert classify("yes yes cancel") == Classification(
        OPT_OUT, "cancel", "opt-out wins"
    )


def test_help_wins_over_opt_in() -> None:
    assert classify("yes info") == Classification(HELP, "info", "several keywords")


@pytest.mark.parametrize(
    ("headers", "subject"),
    [
        pytest.param({"Auto-Submitted": "auto-replied"}, "", id="auto-replied"),
        pytest.param({"Auto-Submitted": "auto-generated"}, "", id="auto-generated"),
        pytest.param({"auto-submitted": "Auto-Replied"}, "", id="lower-name"),
        pytest.param({"AUTO-SUBMITTED": "auto-notified"}, "", id="upper-name"),
        pytest.param(
            {"Auto-Submitted": "auto-replied; owner-email=x"}, "", id="with-parameter"
        ),
        pytest.param({"X-Autoreply": "yes"}, "", id="x-autoreply"),
        pytest.param({"x-autorespond": "true"}, "", id="x-autorespond"),
        pytest.param({"Precedence": "auto_reply"}, "", id="precedence-auto-reply"),
        pytest.param({"Precedence": "bulk"}, "", id="precedence-bulk"),
        pytest.param({"PRECEDENCE": " Junk "}, "", id="precedence-junk"),
        pytest.param(
            {"Auto-Submitted": "no", "Precedence": "bulk"}, "", id="second-header"
        ),
    ],
)
def test_auto_reply_headers(headers: dict[str, str], subject: str) -> None:
    result = classify("STOP", headers=headers, subject=subject)
    assert result == Classification(AUTO, "", "auto-reply header")


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("Out of office", id="out-of-office"),
        pytest.param("OUT OF OFFICE: back Monday", id="out-of-office-upper"),
        pytest.param("  Out  of   Office", id="out-of-office-spacing"),
        pytest.param("Automatic reply: your offer", id="automatic-reply"),
        pytest.param("Auto: Re: sale", id="auto-colon"),
        pytest.param("AutoReply from Pat", id="autoreply"),
        pytest.param("autoreply: away", id="autoreply-lower"),
    ],
)
def test_auto_reply_subjects(subject: str) -> None:
    result = classify("unsubscribe", subject=subject)
    assert result == Classification(AUTO, "", "auto-reply subject")


@pytest.mark.parametrize(
    ("headers", "subject"),
    [
        pytest.param({"Auto-Submitted": "no"}, "", id="auto-submitted-no"),
        pytest.param({"Auto-Submitted": " NO "}, "", id="auto-submitted-no-upper"),
        pytest.param({"Auto-Submitted": ""}, "", id="auto-submitted-empty"),
        pytest.param({"X-Autoreply": "no"}, "", id="x-autoreply-no"),
        pytest.param({"Precedence": "list"}, "", id="precedence-list"),
        pytest.param({"Precedence": "first-class"}, "", id="precedence-other"),
        pytest.param({"Subject": "Out of office"}, "", id="subject-as-header-only"),
        pytest.param({}, "Re: Out of office", id="reply-to-ooo"),
        pytest.param({}, "Automobile offer", id="auto-without-colon"),
        pytest.param({}, "Stop", id="plain-subject"),
    ],
)
def test_not_auto_reply_keeps_opt_out(headers: dict[str, str], subject: str) -> None:
    result = classify("STOP", headers=headers, subject=subject)
    assert result == Classification(OPT_OUT, "stop", "single keyword")


def test_auto_reply_with_empty_body() -> None:
    result = classify("", headers={"Auto-Submitted": "auto-replied"})
    assert result.intent is AUTO


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   \t\n ", id="whitespace"),
        pytest.param("\u00a0\u2003", id="unicode-whitespace"),
        pytest.param("?!...", id="punctuation-only"),
        pytest.param("🛑🙏", id="emoji-only"),
    ],
)
def test_empty_is_other(text: str) -> None:
    assert classify(text) == Classification(OTHER, "", "empty text")


def test_text_over_1000_characters_is_other() -> None:
    assert classify("stop " + "x" * 996).rule == "text too long"
    assert classify("stop " + "please " * 200) == Classification(
        OTHER, "", "text too long"
    )


def test_text_of_1000_characters_is_read() -> None:
    assert classify("stop " + "x" * 995).rule == "no leading keyword"


def test_long_auto_reply_is_auto_reply() -> None:
    body = "I am away. " * 500 + "STOP"
    assert classify(body, subject="Out of office").intent is AUTO


def test_very_long_text_is_other_without_raising() -> None:
    assert classify("stop " * 200_000).intent is OTHER


def test_CO_01_each_inbound_message() -> None:
    case = _case("CO-01")
    messages = case["input"]["inbound_messages"]
    expected = case["expected"]
    assert len(messages) == 8
    for text in messages:
        result = classify(text)
        if expected[text] == "opt_out":
            assert result.intent is OPT_OUT, text
            assert result.rule == "single keyword", text
        elif expected[text].startswith(("not auto-processed", "opt-out intent")):
            assert result == Classification(
                OPT_OUT, "stop", "keyword with courtesy words"
            ), text
        else:
            assert expected[text] == "not an opt-out"
            assert result == Classification(OTHER, "", "no leading keyword"), text


def test_CO_06_out_of_office_email_is_auto_reply_not_opt_out() -> None:
    case = _case("CO-06")
    email = case["input"]["inbound_email"]
    result = classify(email["body"], headers=email["headers"], subject=email["subject"])
    assert result.intent == case["expected"]["classification"] == "auto_reply"
    # consent_change "none": an AUTO_REPLY is never an opt-out or opt-in.
    assert result.intent not in (OPT_OUT, OPT_IN)
    stop_body = classify("STOP", headers=email["headers"], subject=email["subject"])
    assert stop_body.intent is AUTO


# Keyword and courtesy strings in normalised form, for the properties below.
_KEYWORD_STRINGS = tuple(kw for _, kw in _ALL_KEYWORDS.values())
_ASCII_TEXT = st.text(
    alphabet=string.ascii_letters + string.digits + " .,!?'-\t", max_size=60
)
_WORDY_TEXT = st.lists(
    st.sampled_from([*_KEYWORD_STRINGS, *_COURTESY, "by", "the", "bill", "I"]),
    max_size=8,
).map(" ".join)


@given(st.text() | _ASCII_TEXT | _WORDY_TEXT)
def test_classify_never_raises_and_normalise_is_idempotent(text: str) -> None:
    result = classify(text)
    assert isinstance(result.intent, Intent)
    assert normalise(normalise(text)) == normalise(text)
    assert classify(normalise(text)) == result


@given(_ASCII_TEXT | _WORDY_TEXT)
def test_case_does_not_matter(text: str) -> None:
    assert classify(text) == classify(text.upper()) == classify(text.lower())


@given(st.text() | _ASCII_TEXT)
def test_text_without_any_keyword_is_other(text: str) -> None:
    normal = normalise(text)
    if any(kw in normal for kw in _KEYWORD_STRINGS):
        return
    assert classify(text).intent is OTHER


@given(
    st.text(),
    st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=4),
    st.text(max_size=40),
)
def test_never_raises_with_any_headers_or_subject(
    text: str, headers: dict[str, str], subject: str
) -> None:
    assert isinstance(classify(text, headers=headers, subject=subject), Classification)
