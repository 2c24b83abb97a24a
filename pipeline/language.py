"""Site languages: the BCP 47 tag a site writes in and the words the pipeline itself puts on its pages.

Model-written text comes in the site's language because the prompts ask for it; the labels here are what
the pipeline writes itself (the FAQ heading, the table of contents, breadcrumbs, the offline provider's
fixed phrases), so a German site's page has no English heading. Unknown languages fall back to their
primary subtag (`de-AT` -> `de`), then to English.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Labels:
    """Words the pipeline writes on a page in one language."""

    faq: str
    contents: str
    home: str
    read_also: str


_LABELS: dict[str, Labels] = {
    "en": Labels(faq="Frequently asked questions", contents="Contents", home="Home", read_also="Read also"),
    "de": Labels(faq="Häufig gestellte Fragen", contents="Inhalt", home="Startseite", read_also="Lesen Sie auch"),
    "fr": Labels(faq="Questions fréquentes", contents="Sommaire", home="Accueil", read_also="À lire aussi"),
    "es": Labels(faq="Preguntas frecuentes", contents="Contenido", home="Inicio", read_also="Lee también"),
    "it": Labels(faq="Domande frequenti", contents="Indice", home="Home", read_also="Leggi anche"),
    "nl": Labels(faq="Veelgestelde vragen", contents="Inhoud", home="Home", read_also="Lees ook"),
    "pt": Labels(faq="Perguntas frequentes", contents="Índice", home="Início", read_also="Leia também"),
    "ja": Labels(faq="よくある質問", contents="目次", home="ホーム", read_also="関連記事"),
}


def primary_subtag(language: str) -> str:
    """`de` for `de-AT`, lowercased."""
    return language.split("-", 1)[0].lower()


def labels(language: str) -> Labels:
    """The pipeline's own words for pages in `language` (English when the language is not covered)."""
    return _LABELS.get(primary_subtag(language), _LABELS["en"])


def covered_languages() -> list[str]:
    """Languages with labels of their own."""
    return sorted(_LABELS)
