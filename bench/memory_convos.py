"""A labelled long-conversation set for memory recall, generated (seeded, so every run is the same set),
and a reader for LongMemEval-S in its published JSON form, so the same harness runs on either.

Each generated conversation is ~40 sessions of chit-chat (user and assistant turns on everyday
topics, with distractors that share a fact's vocabulary but not its content) with facts planted in
user turns at known positions, and one question per fact that paraphrases it (so neither words nor
embeddings alone are enough). A question's evidence is the id of the turn that holds its fact.

LongMemEval-S (Wu et al., 2024: `longmemeval_s.json`, which cannot be fetched here) gives each
question its own haystack of sessions; evidence turns carry `has_answer: true`, evidence sessions
are listed in `answer_session_ids`. `load_longmemeval` turns it into the same `Case` shape.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Turn:
    id: str
    session: str
    role: str
    text: str


@dataclass
class Case:
    """One haystack and the questions asked of it, each with the ids of the turns that answer it
    (and of the sessions, for session-level recall)."""

    name: str
    turns: list[Turn]
    questions: list[tuple[str, set[str], set[str]]] = field(default_factory=list)  # question, turn ids, session ids


NAMES = ["Biscuit", "Juniper", "Olive", "Pepper", "Marlowe", "Tansy", "Rufus", "Clementine", "Hazel", "Otis"]
PEOPLE = ["Ana", "Bea", "Chiara", "Dmitri", "Esme", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lotte"]
CITIES = ["Lisbon", "Osaka", "Valparaiso", "Tromso", "Marrakesh", "Quebec", "Tbilisi", "Hobart", "Ghent", "Cusco"]
ANIMALS = ["beagle", "tabby cat", "parrot", "ferret", "corgi", "rabbit", "tortoise", "greyhound"]
FOODS = ["sesame", "shellfish", "walnuts", "kiwi", "mustard", "lupin", "buckwheat", "celery"]
MONTHS = ["January", "March", "April", "June", "August", "October", "November"]
COLORS = ["green", "silver", "burgundy", "navy", "white", "orange"]
CARS = ["hatchback", "pickup truck", "station wagon", "minivan", "convertible"]
AUTHORS = ["Ursula Le Guin", "Toni Morrison", "Zadie Smith", "Olga Tokarczuk", "Ali Smith"]
INSTRUMENTS = ["cello", "banjo", "clarinet", "harp", "accordion", "ukulele"]
SUBJECTS = ["marine biology", "linguistics", "civil engineering", "art history", "statistics"]
DRUGS = ["sumatriptan", "propranolol", "topiramate", "rizatriptan"]
PLACES = ["animal shelter", "food bank", "public library", "community garden", "soup kitchen"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Saturday", "Sunday"]
OBJECTS = ["flower pot", "doormat", "garden gnome", "loose brick", "watering can"]
GIFTS = ["vintage record player", "pair of hiking boots", "pottery class voucher", "telescope"]
RESTAURANTS = ["Maison Blanc", "The Copper Pot", "Sakura House", "Trattoria Lucia", "El Faro"]

# (fact said by the user, question about it, a distractor that shares its vocabulary but not its content)
FACTS: list[tuple[str, str, str]] = [
    (
        "I finally adopted a {animal} from the shelter and we named it {name}.",
        "What did I call the pet I brought home from the shelter?",
        "My neighbour keeps asking whether shelters let you adopt a {animal} without a garden.",
    ),
    (
        "My sister {person} just moved to {city} for her new job.",
        "Which city did my sister relocate to?",
        "A colleague of mine spent a holiday in {city} and loved the food.",
    ),
    (
        "I'm allergic to {food}, it makes my throat swell up.",
        "Which ingredient gives me an allergic reaction?",
        "Is {food} usually listed on restaurant menus?",
    ),
    (
        "For my birthday my partner gave me a {gift}.",
        "What present did I get from my partner on my birthday?",
        "I'm thinking of buying my dad a {gift} for his retirement.",
    ),
    (
        "I started taking {instrument} lessons in {month}.",
        "Which musical instrument have I been learning to play?",
        "My cousin played the {instrument} in a school orchestra years ago.",
    ),
    (
        "I drive a {color} {car} that I bought second-hand.",
        "What sort of vehicle do I own?",
        "Are {car}s expensive to insure for young drivers?",
    ),
    (
        "My favourite author is {author}, I've read every one of her novels.",
        "Which writer do I like the most?",
        "My book club keeps arguing about whether {author} is overrated.",
    ),
    (
        "The wifi password at our cabin is {word}{num}.",
        "What's the network password for the cabin?",
        "How do I change the wifi password on my home router?",
    ),
    (
        "I finished the {city} half marathon in {num} minutes!",
        "How long did it take me to run the half marathon?",
        "What's a realistic training plan for a first half marathon?",
    ),
    (
        "The landlord told me the rent goes up to {num} dollars from {month}.",
        "How much will I pay in rent after the increase?",
        "Is it normal for rent in {city} to rise every year?",
    ),
    (
        "Last weekend I got a tattoo of a {animal} on my left shoulder.",
        "What is the design of my tattoo?",
        "Do tattoos on the shoulder hurt more than on the arm?",
    ),
    (
        "We're planning a trip to {city} in {month} to see the cherry blossoms.",
        "Where are we going to travel to see the blossoms?",
        "When do cherry blossoms usually bloom in Europe?",
    ),
    (
        "My doctor prescribed {drug} for my migraines.",
        "What medication am I taking for my headaches?",
        "Can stress make migraines worse in winter?",
    ),
    (
        "My first-grade teacher was called Mrs. {person}.",
        "Who taught me in first grade?",
        "My nephew's teacher gives far too much homework for a first-grader.",
    ),
    (
        "I switched my major to {subject} last semester.",
        "What subject am I studying at university now?",
        "Is {subject} a good field for getting a job?",
    ),
    (
        "Grandma's secret ingredient for her stew is a spoon of {food}.",
        "What special ingredient does my grandmother put in her stew?",
        "Give me a quick stew recipe for a cold evening.",
    ),
    (
        "I volunteer at the {place} every {day}.",
        "On which day of the week do I do volunteering?",
        "How do I find volunteering opportunities near me?",
    ),
    (
        "The spare house key is hidden under the {object} by the back door.",
        "Where do we keep the extra key to the house?",
        "Should I get a smart lock instead of using keys?",
    ),
    (
        "Our anniversary dinner is booked at {restaurant}.",
        "Which restaurant did we reserve for our anniversary?",
        "Any tips for a romantic dinner at home?",
    ),
    (
        "My son's football coach is called {person}.",
        "What is the name of my kid's soccer coach?",
        "How often should kids practise football each week?",
    ),
]

TOPICS = [
    "sourdough baking",
    "learning Spanish",
    "houseplants",
    "budget spreadsheets",
    "running shoes",
    "home office ergonomics",
    "composting",
    "board games",
    "photography",
    "meal prep",
    "time management",
    "podcasts",
    "bird watching",
    "camping gear",
    "sleep hygiene",
    "job interviews",
    "knitting",
    "electric bikes",
    "tax returns",
    "jazz history",
]
USER_FILLER = [
    "Can you give me some tips about {topic}?",
    "I've been reading about {topic} lately, where should a beginner start?",
    "What are common mistakes people make with {topic}?",
    "Could you summarise the pros and cons of {topic} in a few lines?",
    "My friend recommended {topic}, is it worth the time?",
    "Write me a short checklist for {topic}.",
]
ASSISTANT_FILLER = [
    "Sure! For {topic}, start small, keep notes, and build a routine you can sustain.",
    "Good question. With {topic}, most people overcomplicate things; focus on the basics first.",
    "Here are three ideas about {topic}: set a goal, find a community, and review progress weekly.",
    "Many beginners in {topic} underestimate how much consistency matters more than intensity.",
    "The main trade-off with {topic} is time versus cost; pick what matters most to you.",
]


def _slots(rng: random.Random) -> dict[str, str]:
    return {
        "animal": rng.choice(ANIMALS),
        "name": rng.choice(NAMES),
        "person": rng.choice(PEOPLE),
        "city": rng.choice(CITIES),
        "food": rng.choice(FOODS),
        "gift": rng.choice(GIFTS),
        "instrument": rng.choice(INSTRUMENTS),
        "month": rng.choice(MONTHS),
        "color": rng.choice(COLORS),
        "car": rng.choice(CARS),
        "author": rng.choice(AUTHORS),
        "word": rng.choice(["pinecone", "lakeview", "moosehead", "northwind"]),
        "num": str(rng.randint(90, 2400)),
        "drug": rng.choice(DRUGS),
        "subject": rng.choice(SUBJECTS),
        "place": rng.choice(PLACES),
        "day": rng.choice(DAYS),
        "object": rng.choice(OBJECTS),
        "restaurant": rng.choice(RESTAURANTS),
    }


def generate(
    conversations: int = 30, sessions: int = 40, turns_per_session: int = 12, facts: int = 8, seed: int = 7
) -> list[Case]:
    """`conversations` haystacks of `sessions` x `turns_per_session` turns with `facts` planted facts each."""
    rng = random.Random(seed)
    out = []
    for c in range(conversations):
        chosen = rng.sample(range(len(FACTS)), facts)
        total = sessions * turns_per_session
        user_slots = [i for i in range(total) if i % 2 == 0]
        spots = sorted(rng.sample(user_slots, facts * 2))  # a fact and a distractor each
        planted = dict(zip(spots[::2], chosen, strict=True))
        distract = dict(zip(spots[1::2], chosen, strict=True))
        case = Case(f"conv-{c}", [])
        evidence: dict[int, str] = {}
        for i in range(total):
            session = f"s{c}-{i // turns_per_session}"
            tid = f"t{c}-{i}"
            topic = rng.choice(TOPICS)
            if i in planted:
                text = FACTS[planted[i]][0].format(**_slots(rng))
                evidence[planted[i]] = tid
            elif i in distract:
                text = FACTS[distract[i]][2].format(**_slots(rng))
            elif i % 2 == 0:
                text = rng.choice(USER_FILLER).format(topic=topic)
            else:
                text = rng.choice(ASSISTANT_FILLER).format(topic=topic)
            case.turns.append(Turn(tid, session, "user" if i % 2 == 0 else "assistant", text))
        sessions_of = {t.id: t.session for t in case.turns}
        for f in chosen:
            case.questions.append((FACTS[f][1], {evidence[f]}, {sessions_of[evidence[f]]}))
        out.append(case)
    return out


def load_longmemeval(path: Path, *, limit: int | None = None, user_turns_only: bool = False) -> list[Case]:
    """LongMemEval-S (or -M) in its published JSON: one `Case` per question, its haystack's turns as records."""
    data = json.loads(Path(path).read_text())
    out = []
    for q in data[:limit] if limit else data:
        case = Case(str(q["question_id"]), [])
        evidence: set[str] = set()
        for sid, session in zip(q["haystack_session_ids"], q["haystack_sessions"], strict=True):
            for j, turn in enumerate(session):
                if user_turns_only and turn["role"] != "user":
                    continue
                tid = f"{sid}#{j}"
                case.turns.append(Turn(tid, str(sid), turn["role"], turn["content"]))
                if turn.get("has_answer"):
                    evidence.add(tid)
        case.questions.append((q["question"], evidence, {str(s) for s in q["answer_session_ids"]}))
        out.append(case)
    return out
