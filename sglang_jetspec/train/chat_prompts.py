"""Chat / prose prompts: instruction templates over topics that are available on this machine.

MT-Bench and ShareGPT are not installable here, so the chat set mixes (a) summarise / rewrite /
explain requests over real prose harvested from standard-library docstrings, (b) questions about
Python concepts and stdlib modules, and (c) general-knowledge, writing and everyday-advice
templates over hand-written topic lists. Each topic (module, docstring, concept, city ...) is one
split group, so a held-out prompt never shares its topic slot with a train prompt.
"""

from __future__ import annotations

import random

from sglang_jetspec.train.prompt_split import PromptCandidate
from sglang_jetspec.train.stdlib_source import paragraphs, stdlib_functions, stdlib_module_docs

MAX_PARAGRAPH_CHARS = 900

_TEXT_TASKS = [
    "Summarize the following text in two sentences:\n\n{text}",
    "Rewrite this paragraph in plain English for a beginner:\n\n{text}",
    "Turn the following text into a bulleted list of its key points:\n\n{text}",
    "Write a question a student might ask about this text, then answer it:\n\n{text}",
    "Explain the following passage to someone who has never programmed:\n\n{text}",
    "Make this text shorter and clearer without losing information:\n\n{text}",
]
_MODULE_QUESTIONS = [
    "What is the Python `{m}` module used for? Give a short example.",
    "When would I use the `{m}` module in Python? Show a typical use.",
    "Give me a quick tour of Python's `{m}` module.",
]
PY_CONCEPTS = [
    "decorators", "generators", "list comprehensions", "context managers", "the global interpreter lock",
    "duck typing", "closures", "lambda functions", "*args and **kwargs", "virtual environments",
    "type hints", "dataclasses", "f-strings", "exceptions and try/except", "the with statement",
    "iterators and the iterator protocol", "mutable and immutable types", "shallow and deep copies",
    "async and await", "threads versus processes", "modules and packages", "the __init__ method",
    "inheritance", "multiple inheritance and the MRO", "class methods and static methods", "properties",
    "magic (dunder) methods", "slicing", "dictionaries", "sets", "tuples", "string formatting",
    "recursion", "the walrus operator", "pattern matching with match/case", "garbage collection",
    "reference counting", "unit testing", "logging", "regular expressions", "reading and writing files",
    "JSON serialization", "command-line arguments", "the if __name__ == '__main__' idiom",
    "enumerate and zip", "map, filter and reduce", "sorting with a key function", "big-O complexity",
    "hash tables", "binary search", "memoization", "metaclasses", "descriptors", "abstract base classes",
    "namedtuples", "the import system", "bytes versus str", "Unicode and encodings", "floating-point rounding",
    "integer division and modulo", "default mutable arguments", "scope and the LEGB rule",
    "pip and package management", "PEP 8 style", "docstrings", "profiling code", "debugging with pdb",
]
_CONCEPT_QUESTIONS = [
    "Explain {c} in Python with a short example.",
    "What are {c} in Python, and when should I use them?",
    "I'm new to Python. Can you explain {c} simply?",
    "What are common mistakes people make with {c} in Python?",
]
TOPICS = [
    "photosynthesis", "the water cycle", "plate tectonics", "black holes", "the immune system", "DNA",
    "climate change", "volcanoes", "earthquakes", "the moon's phases", "gravity", "electricity",
    "magnetism", "the periodic table", "evolution by natural selection", "the human heart", "sleep",
    "vaccines", "antibiotics", "the solar system", "stars and how they die", "the Big Bang", "rainbows",
    "ocean tides", "coral reefs", "rainforests", "deserts", "bees and pollination", "honey", "bread making",
    "coffee", "tea", "chocolate", "the Roman Empire", "ancient Egypt", "the printing press",
    "the Industrial Revolution", "the French Revolution", "the Renaissance", "the Silk Road",
    "the invention of writing", "the first airplanes", "the Moon landing", "the history of the internet",
    "the Olympic Games", "chess", "jazz", "classical music", "impressionist painting", "poetry",
    "Shakespeare's plays", "the novel as a form", "photography", "cinema", "architecture", "bridges",
    "skyscrapers", "trains", "electric cars", "solar power", "wind power", "nuclear power", "batteries",
    "recycling", "plastic pollution", "inflation", "interest rates", "supply and demand", "budgeting",
    "compound interest", "taxes", "banks", "cryptocurrency", "the stock market", "democracy",
    "the rule of law", "human rights", "the United Nations", "languages and how they change",
    "learning a second language", "memory", "habits", "motivation", "stress", "meditation",
    "exercise", "nutrition", "vitamins", "hydration", "the brain", "the five senses", "dreams",
    "artificial intelligence", "machine learning", "computer memory", "how a CPU works",
    "operating systems", "encryption", "passwords", "open source software", "databases",
    "the web browser", "email", "smartphones", "GPS", "3D printing", "robots", "space telescopes",
    "Mars", "Jupiter", "comets", "auroras", "weather forecasting", "hurricanes", "snowflakes",
    "glaciers", "rivers", "mountains", "islands", "maps", "time zones", "calendars", "clocks",
    "money", "trade", "agriculture", "soil", "trees", "mushrooms", "whales", "octopuses", "ants",
    "birds' migration", "dinosaurs", "fossils", "cats", "dogs", "horses", "elephants", "penguins",
    "gardening", "cooking rice", "baking a cake", "knitting", "camping", "hiking safety", "first aid",
    "public speaking", "job interviews", "teamwork", "time management", "negotiation", "writing a CV",
    "friendship", "kindness", "curiosity", "critical thinking", "the scientific method", "statistics",
    "probability", "prime numbers", "infinity", "geometry", "algebra", "calculus", "the number zero",
]
_TOPIC_TASKS = [
    "Explain {t} to a ten-year-old.",
    "Give me five interesting facts about {t}.",
    "Write a short poem about {t}.",
    "Write a short essay (three paragraphs) about {t}.",
    "What are the most common misconceptions about {t}?",
    "Summarize what everyone should know about {t} in a few bullet points.",
    "Write a short story for children that teaches something about {t}.",
    "What questions would a curious student ask about {t}? Answer two of them.",
]
JOBS = ["nurse", "electrician", "software engineer", "teacher", "chef", "pilot", "librarian", "farmer",
        "architect", "firefighter", "dentist", "journalist", "plumber", "translator", "park ranger",
        "pharmacist", "data analyst", "carpenter", "veterinarian", "museum curator", "bus driver",
        "marine biologist", "accountant", "graphic designer", "physiotherapist", "air traffic controller",
        "baker", "judge", "midwife", "game developer", "beekeeper", "tailor", "astronomer", "social worker"]
STORY_OPENINGS = [
    "The lighthouse keeper found a letter with no stamp.", "Nobody in the village had seen snow before.",
    "The robot had been switched off for a hundred years.", "My grandmother kept a key she never used.",
    "The last train of the night stopped in a station that was not on the map.",
    "On the first day of school, the new teacher brought a cage covered with a cloth.",
    "The map in the old book showed an island that did not exist.", "It started raining upward.",
    "The dog would not stop barking at the empty chair.", "Every clock in the city stopped at 3:17.",
    "She opened the fridge and found a small door at the back.", "The message arrived from the future.",
    "The baker's bread could make people tell the truth.", "A whale swam into the harbour and sang.",
    "The chess piece moved by itself.", "He woke up speaking a language nobody knew.",
    "The garden grew a plant that glowed at night.", "The elevator had a button for floor 13 1/2.",
    "Two strangers discovered they had the same dream.", "The old radio picked up a voice calling my name.",
]
CITIES = ["Paris", "Tokyo", "Rome", "New York", "Cairo", "Sydney", "Lisbon", "Istanbul", "Mexico City",
          "Kyoto", "Barcelona", "Prague", "Cape Town", "Vancouver", "Buenos Aires", "Seoul", "Marrakech",
          "Amsterdam", "Vienna", "Bangkok", "Edinburgh", "Reykjavik", "Lima", "Hanoi", "Dublin", "Berlin",
          "Copenhagen", "Singapore", "Havana", "Athens"]
INGREDIENTS = ["chicken", "rice", "lentils", "tomatoes", "spinach", "eggs", "potatoes", "chickpeas", "tofu",
               "mushrooms", "pasta", "cheese", "onions", "carrots", "beans", "salmon", "zucchini", "yogurt",
               "bread", "peppers", "apples", "oats", "bananas", "garlic", "lemon", "coconut milk"]
ACTIVITIES = ["running a first 5K", "learning to swim", "studying for exams", "starting a vegetable garden",
              "learning the guitar", "saving money on groceries", "sleeping better", "keeping a journal",
              "learning to draw", "moving to a new city", "working from home", "reading more books",
              "training a puppy", "cooking for a family on a budget", "preparing for a marathon",
              "making new friends as an adult", "organizing a small wedding", "learning to code",
              "decluttering a home", "speaking up in meetings", "traveling alone", "planning a birthday party"]
RECIPIENTS = [("my landlord", "to fix a leaking tap"), ("my manager", "for a day off next Friday"),
              ("a professor", "for an extension on an assignment"), ("a neighbour", "to keep the noise down at night"),
              ("a customer", "to apologize for a late delivery"), ("my team", "to announce a new project"),
              ("a hotel", "about a lost item"), ("a friend", "to invite them to dinner"),
              ("a company", "to ask about a job opening"), ("my child's teacher", "to schedule a meeting")]


def _harvested_text_candidates(rng: random.Random) -> list[PromptCandidate]:
    out = []
    for md in stdlib_module_docs():
        g = f"module:{md.module}"
        out.append(PromptCandidate(rng.choice(_MODULE_QUESTIONS).format(m=md.module), "chat-module", g))
        paras = [p for p in paragraphs(md.doc, 150) if len(p) <= MAX_PARAGRAPH_CHARS and ">>>" not in p]
        if paras:
            out.append(PromptCandidate(rng.choice(_TEXT_TASKS).format(text=rng.choice(paras)), "chat-moddoc", g))
    for fn in stdlib_functions():
        paras = [p for p in paragraphs(fn.doc, 120) if len(p) <= MAX_PARAGRAPH_CHARS and ">>>" not in p]
        for text in rng.sample(paras, min(2, len(paras))):
            out.append(PromptCandidate(rng.choice(_TEXT_TASKS).format(text=text), "chat-docstring",
                                       f"doc:{fn.module}.{fn.qualname}"))
    return out


def _template_candidates(rng: random.Random) -> list[PromptCandidate]:
    out = []
    for c in PY_CONCEPTS:
        for t in rng.sample(_CONCEPT_QUESTIONS, 2):
            out.append(PromptCandidate(t.format(c=c), "chat-concept", f"concept:{c}"))
    for t in TOPICS:
        for task in rng.sample(_TOPIC_TASKS, 5):
            out.append(PromptCandidate(task.format(t=t), "chat-topic", f"topic:{t}"))
    for job in JOBS:
        out.append(PromptCandidate(f"Describe a typical working day for a {job}.", "chat-jobs", f"job:{job}"))
        out.append(PromptCandidate(f"What skills does a {job} need, and how does someone become one?",
                                   "chat-jobs", f"job:{job}"))
    for opening in STORY_OPENINGS:
        out.append(PromptCandidate(f"Write a short story that begins with: \"{opening}\"", "chat-story",
                                   f"story:{opening}"))
    for city in CITIES:
        days = rng.randint(2, 6)
        out.append(PromptCandidate(f"Plan a {days}-day trip to {city} for someone who likes food and history.",
                                   "chat-travel", f"city:{city}"))
        out.append(PromptCandidate(f"What should a first-time visitor know before going to {city}?",
                                   "chat-travel", f"city:{city}"))
    for i in range(len(INGREDIENTS) * 3):
        items = rng.sample(INGREDIENTS, 3)
        out.append(PromptCandidate(f"Suggest a simple recipe using {items[0]}, {items[1]} and {items[2]}.",
                                   "chat-recipe", f"recipe:{','.join(sorted(items))}"))
    for a in ACTIVITIES:
        out.append(PromptCandidate(f"Give me practical tips for {a}.", "chat-advice", f"activity:{a}"))
        out.append(PromptCandidate(f"Make a four-week plan for {a}.", "chat-advice", f"activity:{a}"))
    for who, what in RECIPIENTS:
        for tone in ("polite", "short", "friendly", "formal"):
            out.append(PromptCandidate(f"Write a {tone} email to {who} asking {what}.", "chat-email",
                                       f"email:{who}"))
    return out


def chat_candidates(seed: int) -> list[PromptCandidate]:
    rng = random.Random(seed)
    return _harvested_text_candidates(rng) + _template_candidates(rng)
