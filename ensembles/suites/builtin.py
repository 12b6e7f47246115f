"""Built-in suites generated from templates, reproducible from a seed."""

from __future__ import annotations

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


@BUILTIN_SUITES.register("arithmetic", pretty_name="Arithmetic")
def arithmetic(seed: int = 0, size: int | None = None) -> Suite:
    """Small-number addition, subtraction and one-step word problems with integer answers."""
    size = 300 if size is None else size
    _check_size(size)
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    seen = {shot.input for shot in _ARITHMETIC_SHOTS}
    items = []
    for index in range(size):
        for _ in range(_MAX_DRAWS_PER_ITEM):
            question, answer = _arithmetic_question(rng)
            if question not in seen:
                break
        else:
            raise ValueError(f"could not draw {size} distinct arithmetic questions")
        seen.add(question)
        items.append(
            Item(
                id=f"arith-{index + 1:04d}",
                input=question,
                reference=str(answer),
                split=_split_for(index, size),
            )
        )
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
