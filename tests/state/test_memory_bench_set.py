"""The memory bench's labelled sets (bench/memory_convos.py): the generated conversations are the same
every run and each question's evidence turn holds its fact; a file in LongMemEval's published shape
reads into the same cases (the real file cannot be fetched here, so a two-question one stands in)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from memory_convos import FACTS, generate, load_longmemeval


def test_the_generated_set_is_seeded_and_labelled():
    one, again = generate(conversations=3), generate(conversations=3)
    assert [[t.text for t in c.turns] for c in one] == [[t.text for t in c.turns] for c in again]
    for case in one:
        assert len(case.turns) == 480 and len(case.questions) == 8
        by_id = {t.id: t for t in case.turns}
        for question, turns, sessions in case.questions:
            [evidence] = turns
            fact = next(f for f, q, _ in FACTS if q == question)
            head = fact.split("{")[0]
            assert by_id[evidence].role == "user" and by_id[evidence].text.startswith(head)
            assert sessions == {by_id[evidence].session}
        assert len({q for q, _, _ in case.questions}) == 8  # eight different kinds of fact


def test_a_longmemeval_file_reads_into_cases(tmp_path):
    data = [
        {
            "question_id": "q1",
            "question_type": "single-session-user",
            "question": "What is my dog's name?",
            "answer": "Biscuit",
            "haystack_session_ids": ["s1", "s2"],
            "haystack_sessions": [
                [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
                [{"role": "user", "content": "My dog is Biscuit.", "has_answer": True}],
            ],
            "answer_session_ids": ["s2"],
        },
        {
            "question_id": "q2",
            "question": "Where do I live?",
            "answer": "Oslo",
            "haystack_session_ids": ["s9"],
            "haystack_sessions": [[{"role": "user", "content": "I live in Oslo", "has_answer": True}]],
            "answer_session_ids": ["s9"],
        },
    ]
    path = tmp_path / "longmemeval_s.json"
    path.write_text(json.dumps(data))
    cases = load_longmemeval(path)
    assert [c.name for c in cases] == ["q1", "q2"]
    assert [t.text for t in cases[0].turns] == ["hello", "hi", "My dog is Biscuit."]
    assert cases[0].questions == [("What is my dog's name?", {"s2#0"}, {"s2"})]
    assert [t.role for t in load_longmemeval(path, user_turns_only=True)[0].turns] == ["user", "user"]
    assert len(load_longmemeval(path, limit=1)) == 1
