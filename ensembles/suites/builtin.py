"""Built-in suites generated from templates, reproducible from a seed."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

from ensembles.registry import Registry
from ensembles.suites.model import FewShot, Item, Suite, SuiteManifest

SuiteGenerator = Callable[..., Suite]

BUILTIN_SUITES: Registry[SuiteGenerator] = Registry("builtin suite")

# Generators redraw on duplicate inputs; give up well before looping forever.
_MAX_DRAWS_PER_ITEM = 50


def get_builtin(name: str, seed: int = 0, size: int | None = None) -> Suite:
    """Generate the built-in suite ``name``; the same (seed, size) always gives the same suite."""
    return BUILTIN_SUITES.get(name)(seed=seed, size=size)


def _split_for(index: int, size: int) -> str:
    """First half dev, second half test."""
    return "dev" if index < size // 2 else "test"


def _check_size(size: int) -> None:
    if size < 2:
        raise ValueError(f"size must be >= 2 so both dev and test are non-empty, got {size}")


# ---------------------------------------------------------------- arithmetic

_PEOPLE = [
    ("Tom", "he"),
    ("Sara", "she"),
    ("Ben", "he"),
    ("Mia", "she"),
    ("Ali", "he"),
    ("Lena", "she"),
]
_THINGS = [
    "apples",
    "pencils",
    "marbles",
    "books",
    "stickers",
    "cookies",
    "coins",
    "balloons",
]

_ARITHMETIC_SHOTS = [
    FewShot(input="What is 2 + 3?", output="5"),
    FewShot(input="What is 15 - 7?", output="8"),
    FewShot(
        input="Anna has 4 pens and buys 2 more. How many pens does she have?",
        output="6",
    ),
]


def _arithmetic_question(rng: random.Random) -> tuple[str, int]:
    """One (question, answer) pair; the mix is tuned so 135M-270M models are right only sometimes."""
    kind = rng.choices(["add1", "add2", "sub", "word"], weights=[30, 20, 20, 30])[0]
    if kind == "add1":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return f"What is {a} + {b}?", a + b
    if kind == "add2":
        a, b = rng.randint(10, 60), rng.randint(2, 39)
        return f"What is {a} + {b}?", a + b
    if kind == "sub":
        a = rng.randint(5, 30)
        b = rng.randint(1, a - 1)  # answers stay positive
        return f"What is {a} - {b}?", a - b

    name, pronoun = rng.choice(_PEOPLE)
    thing = rng.choice(_THINGS)
    a, b = rng.randint(2, 12), rng.randint(1, 9)
    template = rng.randrange(4)
    if template == 0:
        return (
            f"{name} has {a} {thing} and buys {b} more. How many {thing} does {pronoun} have?",
            a + b,
        )
    if template == 1:
        return (
            f"There are {a} {thing} in a box. {name} puts in {b} more. How many {thing} are in the box?",
            a + b,
        )
    a = max(a, b + 1)
    if template == 2:
        return (
            f"{name} has {a} {thing} and gives {b} to a friend. How many {thing} does {pronoun} have left?",
            a - b,
        )
    return (
        f"{name} had {a} {thing} and lost {b}. How many {thing} does {pronoun} have now?",
        a - b,
    )


def _distinct_items(
    rng: random.Random,
    size: int,
    draw: Callable[[random.Random], tuple[str, object]],
    shots: list[FewShot],
    prefix: str,
) -> list[Item]:
    """``size`` generation items with distinct inputs (none equal to a few-shot example)."""
    _check_size(size)
    seen = {shot.input for shot in shots}
    items = []
    for index in range(size):
        for _ in range(_MAX_DRAWS_PER_ITEM):
            question, answer = draw(rng)
            if question not in seen:
                break
        else:
            raise ValueError(f"could not draw {size} distinct {prefix} questions")
        seen.add(question)
        items.append(
            Item(
                id=f"{prefix}-{index + 1:04d}",
                input=question,
                reference=str(answer),
                split=_split_for(index, size),
            )
        )
    return items


@BUILTIN_SUITES.register("arithmetic", pretty_name="Arithmetic")
def arithmetic(seed: int = 0, size: int | None = None) -> Suite:
    """Small-number addition, subtraction and one-step word problems with integer answers."""
    size = 300 if size is None else size
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    items = _distinct_items(rng, size, _arithmetic_question, _ARITHMETIC_SHOTS, "arith")
    manifest = SuiteManifest(
        name="arithmetic",
        version="1",
        task_type="generation",
        prompt_template="Question: {input}\nAnswer:",
        few_shot=_ARITHMETIC_SHOTS,
        answer_extraction="number",
        metric="exact_match",
        description="Single- and two-digit addition and subtraction plus one-step word problems.",
        max_new_tokens=8,
        stop=["\n"],
    )
    return Suite(manifest, items)


# -------------------------------------------------------------- mc_knowledge

_CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Russia": "Moscow",
    "China": "Beijing",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Kenya": "Nairobi",
}
_ANIMAL_CLASSES = {
    "dog": "mammal",
    "whale": "mammal",
    "bat": "mammal",
    "horse": "mammal",
    "eagle": "bird",
    "penguin": "bird",
    "owl": "bird",
    "shark": "fish",
    "salmon": "fish",
    "snake": "reptile",
    "lizard": "reptile",
    "crocodile": "reptile",
    "frog": "amphibian",
    "toad": "amphibian",
}
_COLORS = {
    "a ripe banana": "yellow",
    "fresh grass": "green",
    "snow": "white",
    "the clear daytime sky": "blue",
    "coal": "black",
    "a ripe tomato": "red",
    "a carrot": "orange",
    "a lemon": "yellow",
    "milk": "white",
    "a strawberry": "red",
}
_OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "up": "down",
    "fast": "slow",
    "happy": "sad",
    "open": "closed",
    "light": "dark",
    "early": "late",
    "full": "empty",
    "old": "new",
}
_COLOR_NAMES = sorted({*_COLORS.values(), "purple", "brown", "pink"})

_MC_SHOTS = [
    FewShot(
        input="Which planet do we live on?",
        choices=["Earth", "Mars", "Venus", "Jupiter"],
        output="A",
    ),
    FewShot(
        input="How many legs does a spider have?",
        choices=["6", "8", "4", "10"],
        output="B",
    ),
    FewShot(
        input="What do bees make?",
        choices=["milk", "silk", "honey", "wool"],
        output="C",
    ),
]

Fact = tuple[str, str, list[str]]  # (question, correct answer, distractor pool)


def _fact_questions() -> list[Fact]:
    facts: list[Fact] = []
    capitals = sorted(set(_CAPITALS.values()))
    for country, capital in _CAPITALS.items():
        facts.append((f"What is the capital of {country}?", capital, capitals))
    classes = sorted(set(_ANIMAL_CLASSES.values()))
    for animal, cls in _ANIMAL_CLASSES.items():
        facts.append((f"What kind of animal is a {animal}?", cls, classes))
    for thing, color in _COLORS.items():
        facts.append((f"What color is {thing}?", color, _COLOR_NAMES))
    words = sorted({*_OPPOSITES, *_OPPOSITES.values()})
    for word, opposite in _OPPOSITES.items():
        facts.append((f"What is the opposite of {word}?", opposite, words))
    return facts


def _number_question(rng: random.Random) -> tuple[str, str, list[str]]:
    """Returns (question, correct answer, the other three options)."""
    kind = rng.randrange(3)
    if kind == 2:
        even = 2 * rng.randint(1, 49)
        odds = rng.sample(range(1, 99, 2), 3)
        return "Which of these numbers is even?", str(even), [str(n) for n in odds]
    numbers = rng.sample(range(1, 100), 4)
    best = max(numbers) if kind == 0 else min(numbers)
    question = "Which number is the largest?" if kind == 0 else "Which number is the smallest?"
    return question, str(best), [str(n) for n in numbers if n != best]


def _mc_item(
    rng: random.Random,
    index: int,
    size: int,
    question: str,
    answer: str,
    others: list[str],
) -> Item:
    gold = rng.randrange(4)
    choices = list(others)
    rng.shuffle(choices)
    choices.insert(gold, answer)
    return Item(
        id=f"mc-{index + 1:04d}",
        input=question,
        choices=choices,
        gold=gold,
        split=_split_for(index, size),
    )


@BUILTIN_SUITES.register("mc_knowledge", pretty_name="MC knowledge")
def mc_knowledge(seed: int = 0, size: int | None = None) -> Suite:
    """Four-option general-knowledge questions (capitals, animals, colors, opposites, numbers)."""
    size = 200 if size is None else size
    _check_size(size)
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    facts = _fact_questions()
    rng.shuffle(facts)
    n_facts = min(len(facts), (size + 1) // 2)

    specs: list[tuple[str, str, list[str]]] = []
    for question, answer, pool in facts[:n_facts]:
        distractors = rng.sample([option for option in pool if option != answer], 3)
        specs.append((question, answer, distractors))
    seen = set()
    while len(specs) < size:
        for _ in range(_MAX_DRAWS_PER_ITEM):
            question, answer, others = _number_question(rng)
            key = (question, answer, frozenset(others))
            if key not in seen:
                break
        else:
            raise ValueError(f"could not draw {size} distinct multiple-choice questions")
        seen.add(key)
        specs.append((question, answer, others))
    rng.shuffle(specs)

    items = [_mc_item(rng, index, size, *spec) for index, spec in enumerate(specs)]
    manifest = SuiteManifest(
        name="mc_knowledge",
        version="1",
        task_type="multiple_choice",
        prompt_template="Question: {input}\n{choices}\nAnswer:",
        few_shot=_MC_SHOTS,
        answer_extraction="letter",
        metric="exact_match",
        description="Four-option questions on capitals, animal classes, colors, opposites and numbers.",
        max_new_tokens=4,
        stop=["\n"],
    )
    return Suite(manifest, items)


# ------------------------------------------------------------ date_reasoning

_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# Dates stay in years whose calendar facts (leap days, month lengths) are settled.
_FIRST_DATE = dt.date(2020, 1, 1)
_LAST_DATE = dt.date(2026, 12, 31)

_DATE_SHOTS = [
    FewShot(input="What day of the week is 2 days after Monday?", output="Wednesday"),
    FewShot(input="If today is Friday, what day was yesterday?", output="Thursday"),
    FewShot(
        input="What is the date 5 days after 2023-06-28? Answer as YYYY-MM-DD.",
        output="2023-07-03",
    ),
]

_RELATIVE_DAYS = [
    ("what day will it be tomorrow?", 1),
    ("what day was yesterday?", -1),
    ("what day will it be the day after tomorrow?", 2),
    ("what day was it the day before yesterday?", -2),
]


_NEXT_DAY_PHRASES = [
    ("What day comes after {day}?", 1),
    ("Which day of the week follows {day}?", 1),
    ("What day comes before {day}?", -1),
    ("Which day of the week comes just before {day}?", -1),
]


def _small_or_large(rng: random.Random, small: int, large: int) -> int:
    """Half the offsets small (models of 135M-270M parameters get some right), half up to ``large``."""
    return rng.randint(1, small) if rng.random() < 0.5 else rng.randint(small + 1, large)


def _date_question(rng: random.Random) -> tuple[str, str]:
    """One (question, answer); answers are a weekday name or an ISO date."""
    kind = rng.choices(["next", "weekday", "relative", "date"], weights=[15, 25, 15, 45])[0]
    if kind == "next":
        start = rng.randrange(7)
        phrase, offset = rng.choice(_NEXT_DAY_PHRASES)
        return phrase.format(day=_WEEKDAYS[start]), _WEEKDAYS[(start + offset) % 7]
    if kind == "weekday":
        start, days = rng.randrange(7), _small_or_large(rng, 3, 13)
        direction = rng.choice(["after", "before"])
        offset = days if direction == "after" else -days
        unit = "day" if days == 1 else "days"
        answer = _WEEKDAYS[(start + offset) % 7]
        return f"What day of the week is {days} {unit} {direction} {_WEEKDAYS[start]}?", answer
    if kind == "relative":
        start = rng.randrange(7)
        phrase, offset = rng.choice(_RELATIVE_DAYS)
        return f"If today is {_WEEKDAYS[start]}, {phrase}", _WEEKDAYS[(start + offset) % 7]
    # Offsets up to 40 days cross month ends, year ends and 29 February often enough to matter.
    span = (_LAST_DATE - _FIRST_DATE).days
    start_date = _FIRST_DATE + dt.timedelta(days=rng.randrange(span + 1))
    days = _small_or_large(rng, 3, 40)
    direction = rng.choice(["after", "before"])
    answer_date = start_date + dt.timedelta(days=days if direction == "after" else -days)
    unit = "day" if days == 1 else "days"
    question = f"What is the date {days} {unit} {direction} {start_date.isoformat()}? Answer as YYYY-MM-DD."
    return question, answer_date.isoformat()


@BUILTIN_SUITES.register("date_reasoning", pretty_name="Date reasoning")
def date_reasoning(seed: int = 0, size: int | None = None) -> Suite:
    """Weekday arithmetic ("3 days after Monday") and calendar-date offsets answered as YYYY-MM-DD."""
    size = 300 if size is None else size
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    items = _distinct_items(rng, size, _date_question, _DATE_SHOTS, "date")
    manifest = SuiteManifest(
        name="date_reasoning",
        version="1",
        task_type="generation",
        prompt_template="Question: {input}\nAnswer:",
        few_shot=_DATE_SHOTS,
        answer_extraction="date",
        metric="exact_match",
        description="Days of the week before or after a given day, and dates a number of days from a given date.",
        max_new_tokens=16,
        stop=["\n"],
    )
    return Suite(manifest, items)


# ----------------------------------------------------------- unit_conversion

# (larger unit, smaller unit, how many smaller units make one larger); names as (singular, plural).
_CONVERSIONS = [
    (("meter", "meters"), ("centimeter", "centimeters"), 100),
    (("kilometer", "kilometers"), ("meter", "meters"), 1000),
    (("centimeter", "centimeters"), ("millimeter", "millimeters"), 10),
    (("kilogram", "kilograms"), ("gram", "grams"), 1000),
    (("liter", "liters"), ("milliliter", "milliliters"), 1000),
    (("hour", "hours"), ("minute", "minutes"), 60),
    (("minute", "minutes"), ("second", "seconds"), 60),
    (("day", "days"), ("hour", "hours"), 24),
    (("week", "weeks"), ("day", "days"), 7),
]

_UNIT_SHOTS = [
    FewShot(input="How many grams are in 2 kilograms?", output="2000"),
    FewShot(input="How many hours are in 120 minutes?", output="2"),
    FewShot(input="Convert 4 weeks to days.", output="28"),
]


def _quantity(amount: int, unit: tuple[str, str]) -> str:
    return f"{amount} {unit[0] if amount == 1 else unit[1]}"


def _unit_question(rng: random.Random) -> tuple[str, int]:
    """One (question, integer answer); half go from large to small units, half back."""
    large, small, factor = rng.choice(_CONVERSIONS)
    count = _small_or_large(rng, 3, 30)
    # Converting down multiplies; converting up divides a multiple of the factor, so answers stay whole.
    if rng.random() < 0.5:
        source, target, amount, answer = large, small, count, count * factor
    else:
        source, target, amount, answer = small, large, count * factor, count
    if rng.random() < 0.5:
        return f"How many {target[1]} are in {_quantity(amount, source)}?", answer
    return f"Convert {_quantity(amount, source)} to {target[1]}.", answer


@BUILTIN_SUITES.register("unit_conversion", pretty_name="Unit conversion")
def unit_conversion(seed: int = 0, size: int | None = None) -> Suite:
    """Length, mass, volume and time conversions with whole-number answers."""
    size = 300 if size is None else size
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    items = _distinct_items(rng, size, _unit_question, _UNIT_SHOTS, "unit")
    manifest = SuiteManifest(
        name="unit_conversion",
        version="1",
        task_type="generation",
        prompt_template="Question: {input}\nAnswer:",
        few_shot=_UNIT_SHOTS,
        answer_extraction="number",
        metric="exact_match",
        description="Conversions between metric length, mass and volume units and between units of time.",
        max_new_tokens=8,
        stop=["\n"],
    )
    return Suite(manifest, items)


# --------------------------------------------------------------------- logic

_NAMES = ["Ann", "Bob", "Cy", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lou", "Ned", "Pam", "Tom", "Zoe"]
# (comparative, inverse comparative, superlative of the first, superlative of the last)
_ORDERINGS = [
    ("taller", "shorter", "tallest", "shortest"),
    ("older", "younger", "oldest", "youngest"),
    ("faster", "slower", "fastest", "slowest"),
    ("heavier", "lighter", "heaviest", "lightest"),
]
_OBJECTS = ["box", "ball", "car", "door", "cup", "hat", "kite", "chair", "bag", "book", "lamp", "shirt"]
_COLOR_WORDS = ["red", "blue", "green", "yellow", "white", "black"]

_LOGIC_SHOTS = [
    FewShot(input="Sue is taller than Max. Max is taller than Lee. Who is the shortest?", output="Lee"),
    FewShot(input="The pen is not blue. Is the pen blue? Answer yes or no.", output="no"),
    FewShot(input="Rob is older than Ida. Who is the youngest?", output="Ida"),
]


def _ordering_question(rng: random.Random) -> tuple[str, str]:
    """A chain "A > B > C" stated pairwise in shuffled order; asks for an end of the chain or a pair."""
    people = rng.sample(_NAMES, rng.choice([3, 3, 4]))  # first is the most (tallest, oldest, ...)
    more, less, most, least = rng.choice(_ORDERINGS)
    facts = []
    for upper, lower in zip(people, people[1:], strict=False):
        # Some facts use the inverse comparative, so the chain must be read both ways.
        facts.append(f"{upper} is {more} than {lower}." if rng.random() < 0.7 else f"{lower} is {less} than {upper}.")
    rng.shuffle(facts)
    ask = rng.choice(["most", "least", "pair"]) if len(people) == 4 else rng.choice(["most", "least"])
    if ask == "most":
        return f"{' '.join(facts)} Who is the {most}?", people[0]
    if ask == "least":
        return f"{' '.join(facts)} Who is the {least}?", people[-1]
    # Ends of the chain are never adjacent, so the answer takes two steps of reasoning.
    first, last = (people[0], people[-1]) if rng.random() < 0.5 else (people[-1], people[0])
    return f"{' '.join(facts)} Who is {more}, {first} or {last}?", people[0]


def _negation_question(rng: random.Random) -> tuple[str, str]:
    """A colour statement under zero, one or two negations, then a yes/no question; half answer yes."""
    thing, color = rng.choice(_OBJECTS), rng.choice(_COLOR_WORDS)
    other = rng.choice([c for c in _COLOR_WORDS if c != color])
    question = f"Is the {thing} {color}? Answer yes or no."
    # A thing has one colour in these questions, so stating another denies this one.
    if rng.random() < 0.5:
        statements = [
            f"The {thing} is {color}.",
            f"It is not true that the {thing} is not {color}.",
            f"The {thing} is {color}, not {other}.",
        ]
        answer = "yes"
    else:
        statements = [
            f"The {thing} is not {color}.",
            f"It is not true that the {thing} is {color}.",
            f"The {thing} is {other}, not {color}.",
            f"The {thing} is {other}.",
        ]
        answer = "no"
    return f"{rng.choice(statements)} {question}", answer


def _logic_question(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.55:
        return _ordering_question(rng)
    return _negation_question(rng)


@BUILTIN_SUITES.register("logic", pretty_name="Logic")
def logic(seed: int = 0, size: int | None = None) -> Suite:
    """Transitive ordering ("who is the shortest?") and negation ("is the box red?") questions."""
    size = 300 if size is None else size
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    items = _distinct_items(rng, size, _logic_question, _LOGIC_SHOTS, "logic")
    manifest = SuiteManifest(
        name="logic",
        version="1",
        task_type="generation",
        prompt_template="Question: {input}\nAnswer:",
        few_shot=_LOGIC_SHOTS,
        answer_extraction="word",
        metric="exact_match",
        description="Orderings stated pairwise (taller, older, faster, heavier) and yes/no questions under negation.",
        max_new_tokens=8,
        stop=["\n"],
    )
    return Suite(manifest, items)
