"""Personal data in served text, found and masked before anything is written to the traffic log.

Detection is Microsoft Presidio's analyzer (``presidio-analyzer``) with its pattern recognisers only:
e-mail addresses, phone numbers (Google's ``phonenumbers``), credit cards (Luhn-checked), IBANs (checksum),
IP addresses, US social security numbers and crypto wallets. Presidio's person and place detection needs
a downloaded spaCy model, and nothing here downloads: it runs on a blank spaCy English pipeline, which
tokenises but recognises no names. distil adds its own patterns for what that leaves out:

* person names after a cue ("my name is", "I'm", "Mr", "Dr", "regards,"), not names standing alone;
* street addresses (a house number, capitalised words and a street word; German ``-straße`` forms) and
  UK and US postcodes;
* any run of 6 or more digits (account, order and card numbers the checksums reject).

Names with no cue are a known gap: ``benchmarks/pii_redaction.py`` measures recall per entity type on a
labelled set and reports it in docs/benchmarks.md.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

# Presidio entity -> what replaces it in the log. Each is claimed: a test checks it is masked in a served row.
PRESIDIO_ENTITIES = {
    "EMAIL_ADDRESS": "[EMAIL]",
    "PHONE_NUMBER": "[PHONE]",
    "CREDIT_CARD": "[CARD]",
    "IBAN_CODE": "[IBAN]",
    "IP_ADDRESS": "[IP]",
    "US_SSN": "[SSN]",
    "CRYPTO": "[CRYPTO]",
}
PATTERN_ENTITIES = {"PERSON": "[PERSON]", "STREET_ADDRESS": "[ADDRESS]", "POSTCODE": "[POSTCODE]", "NUMBER": "[NUMBER]"}
TOKENS = {**PRESIDIO_ENTITIES, **PATTERN_ENTITIES}
MIN_SCORE = 0.3  # presidio's phone matches score 0.4, its weakest SSN / bank patterns 0.05 (those we leave to NUMBER)

_NAME = r"[A-Z](?:[a-z]+|'[A-Z][a-z]+)(?:-[A-Z][a-z]+)?"  # Dana, O'Neill, Anna-Lena
_PERSON = re.compile(
    r"(?:\b(?:[Mm]y name is|[Nn]ame:|[Tt]his is|[Ii] am|I'm|[Cc]all me|[Ss]igned|on behalf of)\s+"
    r"|\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+"
    r"|\b(?:[Rr]egards|[Tt]hanks|[Tt]hank you|[Cc]heers|[Bb]est|[Ss]incerely|[Bb]est wishes),?\s*\n?\s*)"
    rf"(?P<name>{_NAME}(?:\s{_NAME}){{0,2}})"
)
# Words that follow "I'm" / "This is" in ordinary sentences and are capitalised only at a sentence start.
_NOT_NAMES = {
    "Not",
    "Having",
    "Unable",
    "Sorry",
    "Trying",
    "Still",
    "Getting",
    "Looking",
    "Writing",
    "Here",
    "The",
    "A",
    "An",
    "It",
    "Just",
    "So",
    "Very",
    "Really",
    "Also",
    "Now",
    "Urgent",
    "Again",
    "About",
    "Regarding",
}
_STREET_WORDS = (
    r"Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|Terrace|Close|"
    r"Square|Sq|Crescent|Parkway|Pkwy|Highway|Hwy|Row|Mews|Gardens|Hill"
)
_STREET = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Z][a-z]+\.?\s+){{1,4}}(?:{_STREET_WORDS})\b\.?"
    r"(?:,?\s*(?:Apt|Apartment|Suite|Unit|Flat)\.?\s*#?\w+)?"
    r"|\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|weg|platz|gasse|allee|ring)\s+\d{1,4}[a-z]?\b"
)
_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b|\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")
_DIGITS = re.compile(r"\d{6,}")


@dataclass(frozen=True)
class Span:
    entity: str
    start: int
    end: int


@functools.cache
def _analyzer() -> Any:
    """Presidio's analyzer on a blank spaCy pipeline (no model to download), built once (about a second)."""
    import spacy
    import tldextract.tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    # The e-mail recogniser checks domains with tldextract, which would fetch the public suffix list;
    # with no URLs it uses the snapshot shipped in the package.
    tldextract.tldextract.TLD_EXTRACTOR.suffix_list_urls = ()

    class BlankEnglish(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankEnglish(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])


def _pattern_spans(text: str) -> list[Span]:
    spans = [
        Span("PERSON", m.start("name"), m.end("name"))
        for m in _PERSON.finditer(text)
        if m.group("name").split()[0] not in _NOT_NAMES
    ]
    spans += [Span("STREET_ADDRESS", m.start(), m.end()) for m in _STREET.finditer(text)]
    spans += [Span("POSTCODE", m.start(), m.end()) for m in _POSTCODE.finditer(text)]
    spans += [Span("NUMBER", m.start(), m.end()) for m in _DIGITS.finditer(text)]
    return spans


def find_pii(text: str) -> list[Span]:
    """Every span of personal data found in ``text``, overlapping spans merged (the longer one names it)."""
    if not text:
        return []
    found = [
        Span(r.entity_type, r.start, r.end)
        for r in _analyzer().analyze(text, language="en", entities=list(PRESIDIO_ENTITIES), score_threshold=MIN_SCORE)
    ]
    found += _pattern_spans(text)
    merged: list[Span] = []
    for span in sorted(found, key=lambda s: (s.start, -(s.end - s.start))):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            entity = last.entity if (last.end - last.start) >= (span.end - span.start) else span.entity
            merged[-1] = Span(entity, last.start, max(last.end, span.end))
        else:
            merged.append(span)
    return merged


def redact(text: str) -> str:
    """``text`` with each span of personal data replaced by its entity's token, e.g. ``[EMAIL]``."""
    out = text
    for span in reversed(find_pii(text)):
        out = out[: span.start] + TOKENS[span.entity] + out[span.end :]
    return out
