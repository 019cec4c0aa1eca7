"""Math prompts: a seeded generator of school word problems and arithmetic / algebra questions.

GSM8K and MATH are not installable here, so the math set is generated: multi-step word
problems over names, goods, prices and units (GSM8K-like), plus plain arithmetic, fractions,
equations and sequences (MATH-like). Numbers are drawn so the answers come out whole where a
child's textbook would make them whole; the target's own answer is what gets trained on, so the
problems only need to read naturally, not to come with solutions.
"""

from __future__ import annotations

import random
from typing import Callable

from sglang_jetspec.train.prompt_split import PromptCandidate

NAMES = ["Aisha", "Ben", "Carlos", "Dana", "Elif", "Farah", "George", "Hana", "Ivan", "Jamal", "Keiko",
         "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor",
         "Wen", "Ximena", "Yusuf", "Zoe", "Mr. Patel", "Ms. Novak", "Grandma Lucy", "Coach Reed"]
GOODS = [("apple", 1), ("notebook", 3), ("pencil", 1), ("sandwich", 6), ("book", 12), ("toy car", 8),
         ("T-shirt", 15), ("cupcake", 2), ("bag of rice", 9), ("movie ticket", 11), ("plant", 7),
         ("pair of socks", 4), ("puzzle", 14), ("bottle of juice", 3), ("board game", 25)]
CONTAINERS = [("box", "crayons"), ("crate", "oranges"), ("bag", "marbles"), ("jar", "cookies"),
              ("pack", "stickers"), ("basket", "eggs"), ("shelf", "books"), ("tray", "muffins")]
VEHICLES = [("car", 40, 110), ("train", 60, 180), ("bus", 30, 90), ("bicycle", 10, 25), ("boat", 15, 45)]
SUFFIXES = ["", "", "", " Show your work.", " Explain your reasoning step by step.",
            " Give the final answer at the end.", " Think step by step."]


def plural(noun: str) -> str:
    """'pair of socks' -> 'pairs of socks', 'sandwich' -> 'sandwiches', 'crate' -> 'crates'."""
    head, sep, tail = noun.partition(" of ")
    head = head + ("es" if head.endswith(("s", "x", "ch", "sh")) else "s")
    return head + sep + tail


def signed(n: int) -> str:
    """A term after another: '+ 7' or '- 7' (never '+ -7')."""
    return f"+ {n}" if n >= 0 else f"- {-n}"


def hours(n: int) -> str:
    return f"{n} hour" if n == 1 else f"{n} hours"


def _two_names(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(NAMES, 2)
    return a, b


def shopping(rng):
    name = rng.choice(NAMES)
    (g1, p1), (g2, p2) = rng.sample(GOODS, 2)
    a, b = rng.randint(2, 9), rng.randint(2, 6)
    p1, p2 = p1 * rng.randint(1, 3), p2 * rng.randint(1, 2)
    total = a * p1 + b * p2
    bill = next(x for x in (20, 50, 100, 200, 500, 1000) if x > total)  # total <= 9*75 + 6*50
    return (f"{name} buys {a} {plural(g1)} at ${p1} each and {b} {plural(g2)} at ${p2} each, and pays with a "
            f"${bill} bill. How much change does {name} get?")


def discount(rng):
    (g, p) = rng.choice(GOODS)
    price = p * rng.randint(4, 20)
    d, tax = rng.choice([10, 15, 20, 25, 30, 40, 50]), rng.choice([5, 8, 10])
    return (f"A {g} costs ${price}. It is on sale for {d}% off, and then a {tax}% sales tax is added "
            f"to the sale price. What is the final price?")


def travel(rng):
    v, lo, hi = rng.choice(VEHICLES)
    s1, s2 = rng.randrange(lo, hi, 5), rng.randrange(lo, hi, 5)
    t1, t2 = rng.randint(1, 4), rng.randint(1, 3)
    return (f"A {v} travels at {s1} km/h for {hours(t1)} and then at {s2} km/h for {hours(t2)}. "
            f"How far does it travel in total, and what is its average speed?")


def meet(rng):
    v1, v2 = rng.randrange(40, 100, 5), rng.randrange(40, 100, 5)
    t = rng.randint(2, 5)
    return (f"Two trains leave stations {(v1 + v2) * t} km apart at the same time and travel toward each "
            f"other, one at {v1} km/h and the other at {v2} km/h. After how many hours do they meet?")


def work_together(rng):
    a, b = _two_names(rng)
    x, y = rng.choice([(2, 3), (3, 6), (4, 12), (6, 3), (5, 20), (10, 15), (12, 4)])
    task = rng.choice(["paint a fence", "mow the lawn", "clean the house", "pack the boxes"])
    return f"{a} can {task} in {x} hours and {b} can do it in {y} hours. How long does it take them working together?"


def ages(rng):
    a, b = _two_names(rng)
    young = rng.randint(3, 15)
    k = rng.randint(2, 4)
    y = rng.randint(2, 10)
    return (f"{a} is {k} times as old as {b}. In {y} years, the sum of their ages will be "
            f"{(k + 1) * young + 2 * y}. How old is {b} now?")


def recipe(rng):
    cups, n = rng.randint(2, 5), rng.choice([12, 18, 24, 30])
    m = n * rng.choice([2, 3, 4]) // rng.choice([1, 2, 3])
    ing = rng.choice(["cups of flour", "eggs", "tablespoons of sugar", "cups of milk"])
    return f"A recipe uses {cups} {ing} to make {n} cookies. How many {ing} are needed to make {m} cookies?"


def savings(rng):
    name = rng.choice(NAMES)
    w, per = rng.randint(4, 20), rng.choice([5, 8, 10, 12, 15, 20, 25])
    frac = rng.choice(["a quarter", "a third", "half", "two fifths"])
    item = rng.choice(["a bike", "a video game", "a gift for a friend", "concert tickets"])
    return (f"{name} saves ${per} every week for {w} weeks, then spends {frac} of the savings on {item}. "
            f"How much money does {name} have left?")


def garden(rng):
    l, w = rng.randint(5, 40), rng.randint(3, 25)
    cost = rng.choice([2, 3, 4, 5, 7, 12])
    return (f"A rectangular garden is {l} m long and {w} m wide. Fencing costs ${cost} per meter. "
            f"What is the area of the garden, and how much does it cost to fence it all around?")


def average_needed(rng):
    name = rng.choice(NAMES)
    scores = [rng.randint(60, 98) for _ in range(rng.randint(3, 5))]
    target = rng.randint(max(70, sum(scores) // len(scores)), 95)
    listed = ", ".join(map(str, scores[:-1])) + f" and {scores[-1]}"
    return (f"{name} scored {listed} on the first {len(scores)} tests. What score does {name} need on the "
            f"next test to have an average of {target}?")


def containers(rng):
    box, thing = rng.choice(CONTAINERS)
    n, per, used = rng.randint(3, 12), rng.randint(6, 48), rng.randint(2, 30)
    name = rng.choice(NAMES)
    friends = rng.randint(2, 6)
    return (f"{name} has {n} {plural(box)} with {per} {thing} in each. {name} uses {used} {thing} and shares the "
            f"rest equally among {friends} friends. How many {thing} does each friend get, and how many are left over?")


def legs(rng):
    a, b = rng.randint(3, 30), rng.randint(3, 30)
    return f"A farm has {a} cows and {b} chickens. How many legs and how many heads are there in total?"


def heads_legs(rng):
    a, b = rng.randint(3, 30), rng.randint(3, 30)
    return f"A farm has chickens and rabbits: {a + b} heads and {2 * a + 4 * b} legs in all. How many of each animal are there?"


def time_calc(rng):
    h, m = rng.randint(6, 11), rng.choice([0, 10, 15, 20, 30, 45, 50])
    dur_h, dur_m = rng.randint(1, 6), rng.choice([5, 15, 25, 35, 40, 55])
    event = rng.choice(["a road trip", "a movie marathon", "a hike", "a flight", "a baking session"])
    return f"{event.capitalize()} starts at {h}:{m:02d} a.m. and lasts {dur_h} hours and {dur_m} minutes. At what time does it end?"


def conversion(rng):
    kind = rng.randrange(4)
    if kind == 0:
        return f"How many seconds are there in {rng.randint(2, 9)} hours and {rng.randint(1, 59)} minutes?"
    if kind == 1:
        return f"Convert {rng.randint(2, 99) * 25} grams to kilograms and to milligrams."
    if kind == 2:
        return f"A room is {rng.randint(3, 9)}.{rng.randint(1, 9)} m by {rng.randint(3, 9)} m. What is its area in square centimeters?"
    return f"A tank holds {rng.randint(20, 400)} liters. How many milliliters is that, and how many 250 mL glasses can it fill?"


def probability(rng):
    r, b, g = rng.randint(2, 9), rng.randint(2, 9), rng.randint(0, 6)
    extra = f", {g} green" if g else ""
    draw = rng.choice(["one marble", "two marbles without replacement", "two marbles with replacement"])
    return f"A bag has {r} red{extra} and {b} blue marbles. If you draw {draw}, what is the probability that " + (
        "it is red?" if draw == "one marble" else "both are red?")


def percent_change(rng):
    a = rng.randint(20, 500)
    p = rng.choice([5, 10, 12, 20, 25, 40])
    q = rng.choice([5, 10, 15, 20, 25])
    what = rng.choice(["The population of a town", "The price of a share", "A shop's monthly sales"])
    return f"{what} is {a * 100}. It increases by {p}% one year and decreases by {q}% the next. What is it after the two years, and what is the overall percent change?"


def wages(rng):
    name = rng.choice(NAMES)
    rate, base, extra = rng.randint(12, 40), rng.choice([35, 38, 40]), rng.randint(2, 12)
    mult = rng.choice(["1.5", "2"])
    return (f"{name} earns ${rate} an hour for the first {base} hours of a week and {mult} times that rate "
            f"for every hour beyond {base}. Last week {name} worked {base + extra} hours. How much did {name} earn?")


def profit(rng):
    (g, p) = rng.choice(GOODS)
    n, cost = rng.randint(20, 200), p * rng.randint(1, 4)
    markup, unsold = rng.choice([20, 25, 40, 50, 60]), rng.randint(1, 15)
    return (f"A shop buys {n} {plural(g)} for ${cost} each and sells them at a {markup}% markup. "
            f"{unsold} of them are left unsold. What is the shop's profit?")


def reading(rng):
    name = rng.choice(NAMES)
    pages, first, per = rng.randint(120, 600), rng.randint(10, 60), rng.randint(15, 50)
    return (f"{name}'s book has {pages} pages. {name} read {first} pages on Monday and plans to read "
            f"{per} pages every day after that. On which day will {name} finish the book, and how many pages "
            f"are read on that last day?")


# ---- non-word problems ------------------------------------------------------------------------
def arithmetic(rng):
    a, b, c, d = rng.randint(12, 999), rng.randint(2, 99), rng.randint(1, 500), rng.randint(2, 12)
    forms = [f"{a} * {b} + {c}", f"({a} + {c}) * {d}", f"{a * d} / {d} - {b}", f"{a} - {b} * {d} + {c}",
             f"{b}^2 + {d}^3", f"{a} * {b} - {c} * {d}"]
    return rng.choice(["Compute {}.", "What is {}?", "Evaluate {}."]).format(rng.choice(forms))


def fractions(rng):
    a, b, c, d = rng.randint(1, 9), rng.randint(2, 12), rng.randint(1, 9), rng.randint(2, 12)
    op = rng.choice(["+", "-", "*", "divided by"])
    return f"What is {a}/{b} {op} {c}/{d}? Write the answer as a simplified fraction."


def linear_equation(rng):
    x, a, b = rng.randint(-20, 20), rng.randint(2, 12), rng.randint(-50, 50)
    c = rng.randint(1, 9)
    if rng.random() < 0.5:
        return f"Solve for x: {a}x {signed(b)} = {a * x + b}."
    if a == c:
        return f"Solve for x: {a}(x - {c}) = {a * (x - c)}."
    return f"Solve for x: {a}x {signed(b)} = {c}x {signed((a - c) * x + b)}."


def linear_system(rng):
    x, y = rng.randint(-9, 9), rng.randint(-9, 9)
    a, b, c, d = (rng.randint(1, 7) for _ in range(4))
    if a * d == b * c:
        d += 1
    return f"Solve the system of equations: {a}x + {b}y = {a * x + b * y} and {c}x - {d}y = {c * x - d * y}."


def quadratic(rng):
    r, s = rng.randint(-12, 12), rng.randint(-12, 12)
    bcoef, ccoef = -(r + s), r * s
    poly = f"x^2 {signed(bcoef)}x {signed(ccoef)}"
    return rng.choice([f"Factor {poly}.", f"Find the roots of {poly} = 0.", f"Solve {poly} = 0 for x."])


def expand(rng):
    a, b, c = rng.randint(1, 5), rng.randint(-9, 9), rng.randint(-9, 9)
    return f"Expand and simplify ({a}x {signed(b)})(x {signed(c)})."


def sequence(rng):
    a, d, n = rng.randint(-10, 30), rng.randint(2, 15), rng.randint(10, 60)
    if rng.random() < 0.5:
        return f"An arithmetic sequence starts {a}, {a + d}, {a + 2 * d}, ... What is its {n}th term, and what is the sum of the first {n} terms?"
    r = rng.randint(2, 4)
    return f"A geometric sequence starts {a or 1}, {(a or 1) * r}, {(a or 1) * r * r}, ... What is its {rng.randint(5, 10)}th term?"


def number_theory(rng):
    a, b = rng.randint(12, 400), rng.randint(12, 400)
    kind = rng.randrange(4)
    if kind == 0:
        return f"Find the greatest common divisor and the least common multiple of {a} and {b}."
    if kind == 1:
        return f"What is the remainder when {a * b + rng.randint(1, 99)} is divided by {rng.randint(3, 13)}?"
    if kind == 2:
        return f"Is {rng.randint(100, 999)} a prime number? Explain how you check."
    return f"Write {a * rng.choice([2, 4, 6, 8, 12])} as a product of prime factors."


def geometry(rng):
    kind = rng.randrange(4)
    a, b = rng.randint(3, 20), rng.randint(3, 20)
    if kind == 0:
        return f"A right triangle has legs of length {a} and {b}. What is the length of the hypotenuse and the area of the triangle?"
    if kind == 1:
        return f"A circle has radius {a} cm. What are its circumference and its area? Use pi = 3.14."
    if kind == 2:
        return f"A box is {a} cm by {b} cm by {rng.randint(2, 15)} cm. What are its volume and its surface area?"
    return f"The angles of a triangle are in the ratio {rng.randint(1, 4)}:{rng.randint(1, 5)}:{rng.randint(2, 6)}. What is each angle?"


GENERATORS: list[tuple[str, Callable[[random.Random], str], int]] = [
    # (source label, generator, weight); word problems carry most of the weight, as in GSM8K
    ("math-shopping", shopping, 3), ("math-discount", discount, 2), ("math-travel", travel, 2),
    ("math-meet", meet, 1), ("math-work", work_together, 1), ("math-ages", ages, 1),
    ("math-recipe", recipe, 1), ("math-savings", savings, 2), ("math-garden", garden, 2),
    ("math-average", average_needed, 1), ("math-containers", containers, 2), ("math-legs", legs, 1),
    ("math-heads-legs", heads_legs, 1), ("math-time", time_calc, 1), ("math-conversion", conversion, 1),
    ("math-probability", probability, 1), ("math-percent", percent_change, 1), ("math-wages", wages, 1),
    ("math-profit", profit, 1), ("math-reading", reading, 1),
    ("math-arithmetic", arithmetic, 2), ("math-fractions", fractions, 1), ("math-linear", linear_equation, 2),
    ("math-system", linear_system, 1), ("math-quadratic", quadratic, 1), ("math-expand", expand, 1),
    ("math-sequence", sequence, 1), ("math-number-theory", number_theory, 1), ("math-geometry", geometry, 1),
]


def math_candidates(seed: int, count: int) -> list[PromptCandidate]:
    """``count`` generated problems (before de-duplication); each is its own split group."""
    if count < 0:
        raise ValueError(f"count {count} must be >= 0")
    rng = random.Random(seed)
    weights = [g[2] for g in GENERATORS]
    out = []
    for _ in range(count):
        label, gen, _w = rng.choices(GENERATORS, weights=weights)[0]
        prompt = gen(rng) + rng.choice(SUFFIXES)
        out.append(PromptCandidate(prompt, label, f"math:{prompt}"))
    return out
