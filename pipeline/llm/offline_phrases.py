"""The offline provider's fixed phrases per language, so an offline German or Japanese site reads in its
own language (other languages fall back to English, like `pipeline.language.labels`).

Each template has the same placeholders in every language: `{heading}`, `{heading_lower}`, `{topic}`,
`{kw_a}`, `{kw_b}` in section sentences; `{link}` (an `<a>` element) in link sentences; `{keyword}` in
FAQ answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.language import primary_subtag


@dataclass(frozen=True)
class OfflinePhrases:
    """Everything the offline article composer writes itself, in one language."""

    openers: tuple[str, ...]
    details: tuple[str, ...]
    intro: str  # {count} {topic} {first} {last} {primary}
    conclusion: str  # {primary} {topic}
    meta_description: str  # {angle} {primary}
    links: tuple[str, ...]
    faq_answers: tuple[str, str, str]  # general, yes/no question, how question


@dataclass(frozen=True)
class IdeaPhrases:
    """What the offline ideas composer writes itself, in one language: title patterns by kind
    (`{h}` the lead keyword as a headline; `{left}`/`{right}` for comparisons), suffixes that tell equal
    titles apart, outline fillers by content type (`default` for the others; `{cluster}` the cluster's
    name) and the angle (`{content_type}`, `{lead}`, `{covering}`)."""

    titles: Mapping[str, str]
    variants: tuple[str, str, str]
    fillers: Mapping[str, tuple[str, ...]]
    angle: str


# "Frequently asked questions" is not a filler: the FAQ section has that heading when the site turns it on.
_EN_IDEAS = IdeaPhrases(
    titles={
        "comparison": "{left} vs {right}: Which Should You Choose?",
        "how-to": "{h}: A Step-by-Step Guide",
        "listicle": "{h}: Our Top Picks and How to Choose",
        "question": "{h}? The Short Answer and the Details",
        "review": "{h}: Honest Pros and Cons",
        "guide": "{h}: The Complete Guide",
        "post": "Everything to Know About {h}",
    },
    variants=("Practical Answers", "What to Know", "A Closer Look"),
    fillers={
        "comparison": ("Key Differences at a Glance", "Which One Fits Your Routine", "Verdict"),
        "how-to": ("What You Need Before You Start", "Common Mistakes to Avoid", "Troubleshooting"),
        "listicle": ("How We Chose", "What to Look For", "Quick Answers"),
        "default": ("{cluster}: The Basics", "Common Mistakes to Avoid", "Quick Answers"),
    },
    angle="A {content_type} for readers searching “{lead}”, covering {covering} with concrete, practical answers.",
)

_DE_IDEAS = IdeaPhrases(
    titles={
        "comparison": "{left} vs. {right}: Was passt zu Ihnen?",
        "how-to": "{h}: Schritt für Schritt erklärt",
        "listicle": "{h}: Unsere Favoriten und wie Sie wählen",
        "question": "{h}? Die kurze Antwort und die Details",
        "review": "{h}: Ehrliche Vor- und Nachteile",
        "guide": "{h}: Der umfassende Ratgeber",
        "post": "Alles Wissenswerte über {h}",
    },
    variants=("Praktische Antworten", "Was Sie wissen sollten", "Ein genauerer Blick"),
    fillers={
        "comparison": ("Die wichtigsten Unterschiede", "Was zu Ihrer Routine passt", "Fazit"),
        "how-to": ("Was Sie vorher brauchen", "Häufige Fehler vermeiden", "Wenn etwas schiefgeht"),
        "listicle": ("Wie wir ausgewählt haben", "Worauf Sie achten sollten", "Kurz beantwortet"),
        "default": ("{cluster}: Die Grundlagen", "Häufige Fehler vermeiden", "Kurz beantwortet"),
    },
    angle="Ein Beitrag für alle, die nach „{lead}“ suchen, mit konkreten, praktischen Antworten zu {covering}.",
)

_JA_IDEAS = IdeaPhrases(
    titles={
        "comparison": "{left}と{right}の比較：どちらを選ぶべき？",
        "how-to": "{h}：ステップごとに解説",
        "listicle": "{h}：おすすめと選び方",
        "question": "{h}？短い答えと詳しい解説",
        "review": "{h}：正直なメリットとデメリット",
        "guide": "{h}：完全ガイド",
        "post": "{h}について知っておきたいこと",
    },
    variants=("実践的な答え", "知っておきたいこと", "さらに詳しく"),
    fillers={
        "comparison": ("違いがひと目でわかる比較", "あなたに合うのはどちら", "まとめ"),
        "how-to": ("始める前に準備するもの", "よくある失敗", "うまくいかないとき"),
        "listicle": ("選び方の基準", "チェックすべきポイント", "よくある疑問"),
        "default": ("{cluster}の基本", "よくある失敗", "よくある疑問"),
    },
    angle="「{lead}」を検索する読者のために、{covering}について具体的で実践的な答えをまとめた記事です。",
)

_EN = OfflinePhrases(
    openers=(
        "{heading} comes down to a few decisions that make a visible difference.",
        "Most readers asking about {topic} want a clear answer first, so here it is.",
        "Before going deeper into {topic}, it helps to know what actually matters here.",
        "{heading} is where small details decide the result.",
        "There is no single right way to approach {heading_lower}, but some ways are easier to repeat.",
    ),
    details=(
        "Start with {kw_a}: it sets the baseline, and {kw_b} builds on it once the basics are consistent.",
        "Keep notes on what you change and why; {kw_a} rewards small, deliberate adjustments more than big jumps.",
        "If you compare {kw_a} with {kw_b}, the difference shows most in consistency from one day to the next.",
        "A simple routine around {kw_a} beats an elaborate one you will not keep up.",
        "People who search for {kw_a} usually also ask about {kw_b}, so it is worth settling both together.",
        "Change one variable at a time when working on {kw_a}, otherwise you cannot tell what helped.",
    ),
    intro=(
        "This article walks through {count} parts of {topic}, from {first} to {last}, so you can act on "
        "{primary} today."
    ),
    conclusion=(
        "Pick one idea from this article about {primary}, try it this week and note what changes: "
        "that is how {topic} gets easier."
    ),
    meta_description="{angle} Learn about {primary} and more.",
    links=(
        "For more, see {link}.",
        "Related reading: {link}.",
        "If you want to go further, read {link}.",
        "See also {link}.",
    ),
    faq_answers=(
        "In short, it depends most on {keyword}. The sections above walk through the details step by step.",
        "Usually yes, as long as you keep {keyword} consistent; the details are in the sections above.",
        "Start with {keyword} and change one thing at a time; the article explains what to watch for.",
    ),
)

_DE = OfflinePhrases(
    openers=(
        "Bei {heading} entscheiden wenige Punkte über ein sichtbar besseres Ergebnis.",
        "Wer sich mit {topic} beschäftigt, möchte zuerst eine klare Antwort – hier ist sie.",
        "Bevor es bei {topic} in die Tiefe geht, lohnt sich ein Blick darauf, was wirklich zählt.",
        "{heading}: Hier entscheiden kleine Details über das Ergebnis.",
        "Für {heading_lower} gibt es keinen einzig richtigen Weg, aber manche lassen sich leichter wiederholen.",
    ),
    details=(
        "Beginnen Sie mit {kw_a}: Das legt die Grundlage, und {kw_b} baut darauf auf, sobald die Basis sitzt.",
        "Notieren Sie, was Sie ändern und warum; bei {kw_a} zahlen sich kleine, bewusste Anpassungen mehr aus "
        "als große Sprünge.",
        "Im Vergleich von {kw_a} und {kw_b} zeigt sich der Unterschied vor allem in der Beständigkeit von Tag zu Tag.",
        "Eine einfache Routine rund um {kw_a} schlägt eine aufwendige, die Sie nicht durchhalten.",
        "Wer nach {kw_a} sucht, fragt meist auch nach {kw_b}, daher lohnt es sich, beides zusammen zu klären.",
        "Ändern Sie bei {kw_a} immer nur eine Sache auf einmal, sonst wissen Sie nicht, was geholfen hat.",
    ),
    intro=(
        "Dieser Artikel führt durch {count} Teile von {topic}, von {first} bis {last}, damit Sie {primary} noch "
        "heute umsetzen können."
    ),
    conclusion=(
        "Nehmen Sie eine Idee aus diesem Artikel über {primary}, probieren Sie sie diese Woche aus und notieren "
        "Sie, was sich ändert: So wird {topic} einfacher."
    ),
    meta_description="{angle} Alles über {primary} und mehr.",
    links=(
        "Mehr dazu lesen Sie unter {link}.",
        "Weiterführend: {link}.",
        "Passend dazu: {link}.",
        "Lesen Sie auch {link}.",
    ),
    faq_answers=(
        "Kurz gesagt: Es kommt vor allem auf {keyword} an. Die Abschnitte oben erklären die Einzelheiten "
        "Schritt für Schritt.",
        "Meistens ja, solange Sie {keyword} beständig halten; die Einzelheiten stehen in den Abschnitten oben.",
        "Beginnen Sie mit {keyword} und ändern Sie immer nur eine Sache; der Artikel zeigt, worauf Sie achten sollten.",
    ),
)

_JA = OfflinePhrases(
    openers=(
        "{heading}は、いくつかの判断で結果が目に見えて変わります。",
        "{topic}について調べている方は、まず明確な答えを求めています。結論から説明します。",
        "{topic}を深く掘り下げる前に、本当に大切なことを確認しておきましょう。",
        "{heading}では、小さな違いが結果を左右します。",
        "{heading_lower}に唯一の正解はありませんが、続けやすい方法はあります。",
    ),
    details=(
        "まずは{kw_a}から始めましょう。基本が安定したら、{kw_b}で応用できます。",
        "何をなぜ変えたのかを記録しましょう。{kw_a}は大きな変更より小さな調整で成果が出ます。",
        "{kw_a}と{kw_b}を比べると、違いは日々の安定感に最もよく表れます。",
        "{kw_a}は、続かない複雑な方法よりも、シンプルな習慣のほうが効果的です。",
        "{kw_a}を調べる人の多くは{kw_b}についても知りたいので、両方まとめて押さえておきましょう。",
        "{kw_a}に取り組むときは一度にひとつだけ変えましょう。そうしないと何が効いたのか分かりません。",
    ),
    intro="この記事では、{first}から{last}まで、{topic}の{count}つのポイントを解説します。今日から{primary}に取り組めます。",
    conclusion="{primary}についてこの記事からひとつ選び、今週試して変化を記録してください。それが{topic}を身につける近道です。",
    meta_description="{angle} {primary}について詳しく解説します。",
    links=(
        "詳しくは{link}をご覧ください。",
        "関連記事：{link}",
        "あわせて読みたい：{link}",
        "{link}も参考になります。",
    ),
    faq_answers=(
        "ポイントは{keyword}です。詳しい手順は上の各セクションで説明しています。",
        "{keyword}を安定させれば、たいていは問題ありません。詳細は上のセクションをご覧ください。",
        "まずは{keyword}から始め、一度にひとつずつ変えてみましょう。注意点は本文で解説しています。",
    ),
)

_PHRASES = {"en": _EN, "de": _DE, "ja": _JA}
_IDEAS = {"en": _EN_IDEAS, "de": _DE_IDEAS, "ja": _JA_IDEAS}


def offline_phrases(language: str) -> OfflinePhrases:
    """The offline composer's phrases for `language` (English when it has none of its own)."""
    return _PHRASES.get(primary_subtag(language), _EN)


def idea_phrases(language: str) -> IdeaPhrases:
    """The offline ideas composer's phrases for `language` (English when it has none of its own)."""
    return _IDEAS.get(primary_subtag(language), _EN_IDEAS)
