"""Labelled query sets for calibrating and benchmarking the router, built from real offline text.

Three kinds of query, each with a reference answer:

- ``python``: questions about Python standard-library functions; the reference is the first paragraph of
  the function's own docstring (the text ``pydoc`` shows), read from the running interpreter.
- ``personal``: a turn of a real conversation from the chitchat-dataset package; the reference is the reply
  the other person actually sent.
- ``general``: general-knowledge questions with short factual answers, written for this project.

:func:`build_query_set` mixes them deterministically and :func:`split` cuts a calibration part and a test
part that share no query, so the benchmark never scores on the data the calibrators were fitted on.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import random
from dataclasses import asdict, dataclass

PYTHON_MODULES = (
    "os", "os.path", "json", "re", "math", "itertools", "functools", "collections", "string", "textwrap",
    "shutil", "random", "statistics", "heapq", "bisect", "glob", "fnmatch", "base64", "hashlib", "zlib",
    "gzip", "csv", "datetime", "time", "calendar", "difflib", "copy", "pprint", "operator", "urllib.parse",
    "tempfile", "inspect", "html", "uuid", "secrets", "struct", "shlex", "platform", "keyword", "unicodedata",
)
# Added when the set grew past the 521 documented functions of PYTHON_MODULES: drawn only after all of those,
# from a shuffle of their own, so the questions of smaller sets keep their ids and order.
EXTRA_PYTHON_MODULES = (
    "sys", "typing", "dataclasses", "traceback", "codecs", "subprocess", "threading", "logging", "asyncio",
    "socket", "warnings", "pickle", "io",
)

_PY_TEMPLATES = (
    "In Python, what does {name} do?",
    "What is {name} used for in Python?",
    "Explain the Python function {name}.",
    "What does the standard library function {name} return?",
)

GENERAL_QA: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("What is the freezing point of water in Celsius?", "Water freezes at 0 degrees Celsius."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many continents are there?", "There are seven continents."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
    ("What is photosynthesis?",
     "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make glucose and "
     "oxygen."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("What is the chemical formula of water?", "The chemical formula of water is H2O."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth."),
    ("What is the longest river in the world?", "The Nile is usually named the longest river in the world."),
    ("What is the tallest mountain in the world?", "Mount Everest is the tallest mountain in the world."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What is the speed of light?", "The speed of light is about 300,000 kilometres per second."),
    ("Who developed the theory of relativity?", "Albert Einstein developed the theory of relativity."),
    ("What is the square root of 64?", "The square root of 64 is 8."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("What organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("What is the main language spoken in Brazil?", "The main language spoken in Brazil is Portuguese."),
    ("What currency is used in Japan?", "Japan uses the yen."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance."),
    ("Which animal is known as the king of the jungle?", "The lion is known as the king of the jungle."),
    ("What do bees make?", "Bees make honey and wax."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("What is the smallest prime number?", "The smallest prime number is 2."),
    ("Who was the first person to walk on the moon?", "Neil Armstrong was the first person to walk on the moon."),
    ("What is the largest mammal?", "The blue whale is the largest mammal."),
    ("What is the primary ingredient in guacamole?", "Avocado is the primary ingredient in guacamole."),
    ("What causes the seasons on Earth?",
     "The seasons are caused by the tilt of the Earth's axis as it orbits the sun."),
    ("What is gravity?", "Gravity is the force by which masses attract each other."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("Which is the largest desert in the world?",
     "The Antarctic is the largest desert; the Sahara is the largest hot desert."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("What color do you get by mixing blue and yellow?", "Mixing blue and yellow gives green."),
    ("What is the plural of mouse?", "The plural of mouse is mice."),
    ("Who invented the telephone?", "Alexander Graham Bell is credited with inventing the telephone."),
    ("What is DNA?", "DNA is the molecule that carries the genetic instructions of living organisms."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("What is the largest country by area?", "Russia is the largest country by area."),
    ("What instrument has 88 keys?", "The piano has 88 keys."),
    ("What is the main gas in the Earth's atmosphere?", "Nitrogen is the main gas in the Earth's atmosphere."),
    ("Why is the sky blue?",
     "The sky is blue because air scatters blue sunlight more than red light, which is called Rayleigh "
     "scattering."),
    ("What is an atom?", "An atom is the smallest unit of a chemical element, made of protons, neutrons and "
                         "electrons."),
    ("What is a noun?", "A noun is a word that names a person, place, thing or idea."),
    ("How many players are on a soccer team on the field?", "A soccer team has eleven players on the field."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths."),
    ("What is the capital of the United Kingdom?", "The capital of the United Kingdom is London."),
    # Appended later (ids are hashes of the text and general_queries(n) takes a prefix, so older sets keep
    # their ids and cached answers).
    ("What is the capital of Russia?", "The capital of Russia is Moscow."),
    ("What is the capital of China?", "The capital of China is Beijing."),
    ("What is the capital of India?", "The capital of India is New Delhi."),
    ("What is the capital of Kenya?", "The capital of Kenya is Nairobi."),
    ("What is the capital of Argentina?", "The capital of Argentina is Buenos Aires."),
    ("What is the capital of Greece?", "The capital of Greece is Athens."),
    ("How many bones are in the adult human body?", "An adult human body has 206 bones."),
    ("How many planets are in the solar system?", "There are eight planets in the solar system."),
    ("What is the largest organ of the human body?", "The skin is the largest organ of the human body."),
    ("What do we call animals that eat only plants?", "Animals that eat only plants are called herbivores."),
    ("What is the chemical symbol for iron?", "The chemical symbol for iron is Fe."),
    ("What is the chemical symbol for sodium?", "The chemical symbol for sodium is Na."),
    ("What gas do humans breathe out?", "Humans breathe out carbon dioxide."),
    ("What is the closest star to the Earth?", "The sun is the closest star to the Earth."),
    ("What is the natural satellite of the Earth?", "The moon is the Earth's natural satellite."),
    ("Who wrote Pride and Prejudice?", "Jane Austen wrote Pride and Prejudice."),
    ("Who composed the Fifth Symphony?", "Ludwig van Beethoven composed the famous Fifth Symphony."),
    ("Who discovered penicillin?", "Alexander Fleming discovered penicillin in 1928."),
    ("Who proposed the theory of evolution by natural selection?",
     "Charles Darwin proposed the theory of evolution by natural selection."),
    ("What is the largest continent?", "Asia is the largest continent."),
    ("How many weeks are in a year?", "A year has 52 weeks."),
    ("How many seconds are in a minute?", "There are 60 seconds in a minute."),
    ("What is 15 plus 27?", "15 plus 27 is 42."),
    ("What is half of 100?", "Half of 100 is 50."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("What is a verb?", "A verb is a word that describes an action, state or occurrence."),
    ("What is an adjective?", "An adjective is a word that describes a noun."),
    ("What is the past tense of go?", "The past tense of go is went."),
    ("What is the boiling point of water in Fahrenheit?", "Water boils at 212 degrees Fahrenheit at sea level."),
    ("What is the main source of energy for the Earth?", "The sun is the main source of energy for the Earth."),
    ("What is the currency of the United Kingdom?", "The currency of the United Kingdom is the pound sterling."),
    ("What is the currency of the United States?", "The currency of the United States is the dollar."),
    ("What language is spoken in Mexico?", "Spanish is the main language spoken in Mexico."),
    ("Which bird is a symbol of peace?", "The dove is a symbol of peace."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal."),
    ("What is ice made of?", "Ice is frozen water."),
    ("What is a volcano?", "A volcano is an opening in the Earth's crust through which lava, ash and gases "
                           "erupt."),
    ("What is the largest bone in the human body?", "The femur, the thigh bone, is the largest bone in the human "
                                                    "body."),
    ("How many strings does a standard guitar have?", "A standard guitar has six strings."),
    ("What is the freezing point of water in Kelvin?", "Water freezes at 273.15 kelvin."),
)


@dataclass
class Query:
    """One labelled query: the text a user sends and a reference answer."""

    id: str
    kind: str  # "python" | "personal" | "general"
    query: str
    reference: str

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def _qid(kind: str, text: str) -> str:
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _first_paragraph(doc: str) -> str:
    paras = [p.strip() for p in doc.split("\n\n") if p.strip()]
    # Builtin docstrings open with a signature line such as "join(a, *p)"; skip it.
    while paras and "(" in paras[0].split("\n")[0] and paras[0].rstrip().endswith(")") and len(paras) > 1:
        paras = paras[1:]
    return " ".join(paras[0].split()) if paras else ""


def python_queries(n: int, seed: int = 0) -> list[Query]:
    """``n`` questions about documented stdlib functions, reference = first docstring paragraph.

    The first ``n`` of a larger call are the same questions (a prefix), so growing ``n`` keeps old ids. The
    pool depends on the interpreter's modules: importing torch first (as benchmarks/routing_generate.py does)
    adds one inspect function, which reorders the shuffle; build the set the same way every time.
    """
    rng = random.Random(seed)
    found = _documented_functions(PYTHON_MODULES)
    names = sorted(found)
    rng.shuffle(names)
    extra = _documented_functions(EXTRA_PYTHON_MODULES)
    more = sorted(set(extra) - set(found))
    random.Random(seed + 1).shuffle(more)
    found.update(extra)
    out = []
    for name in (names + more)[:n]:
        q = rng.choice(_PY_TEMPLATES).format(name=name)
        out.append(Query(_qid("python", q), "python", q, found[name]))
    return out


def _documented_functions(modules: tuple[str, ...]) -> dict[str, str]:
    """``module.function`` -> first docstring paragraph, for the public functions with a 6-80 word one."""
    found: dict[str, str] = {}
    for modname in modules:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            ref = _first_paragraph(inspect.getdoc(obj) or "")
            if 6 <= len(ref.split()) <= 80:
                found.setdefault(f"{modname}.{attr}", ref)
    return found


def personal_queries(n: int, seed: int = 0) -> list[Query]:
    """``n`` conversation turns from chitchat-dataset with the partner's actual reply as reference."""
    import chitchat_dataset

    rng = random.Random(seed)
    convs = list(chitchat_dataset.Dataset().values())
    rng.shuffle(convs)
    out: list[Query] = []
    seen = set()
    for conv in convs:
        turns = [" ".join(m["text"].strip() for m in turn) for turn in conv.get("messages", [])]
        pairs = [(a, b) for a, b in zip(turns, turns[1:], strict=False)
                 if 5 <= len(a.split()) <= 40 and 4 <= len(b.split()) <= 40]
        if not pairs:
            continue
        a, b = rng.choice(pairs)
        if a in seen:
            continue
        seen.add(a)
        out.append(Query(_qid("personal", a), "personal", a, b))
        if len(out) >= n:
            break
    return out


def general_queries(n: int | None = None) -> list[Query]:
    """The written general-knowledge questions (all, or the first ``n``)."""
    qa = GENERAL_QA if n is None else GENERAL_QA[:n]
    return [Query(_qid("general", q), "general", q, a) for q, a in qa]


def build_query_set(n_python: int, n_personal: int, n_general: int, seed: int = 0) -> list[Query]:
    """A deterministic mix of the three kinds, shuffled."""
    qs = python_queries(n_python, seed) + personal_queries(n_personal, seed) + general_queries(n_general)
    random.Random(seed).shuffle(qs)
    return qs


def split(queries: list[Query], calibration_fraction: float = 0.5) -> tuple[list[Query], list[Query]]:
    """Cut into (calibration, test) by a hash of the id, so the cut does not depend on list order."""
    cal, test = [], []
    for q in queries:
        h = int(hashlib.sha256(q.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (cal if h < calibration_fraction else test).append(q)
    return cal, test
