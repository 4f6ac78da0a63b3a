"""In-context prompt construction (genomelm.icl_prompts): the documented token format, token for token."""

import numpy as np
import pytest

from genomelm.errors import UsageError
from genomelm.icl_prompts import (
    STREAM_TEST,
    STREAM_TRAIN,
    DemoPool,
    build_prompt,
    default_label_tokens,
    parse_label_tokens,
    prompt_length,
)
from genomelm.tokenizer import A_ID, C_ID, CLS_ID, G_ID, N_ID, SEP_ID, T_ID, CharTokenizer

TOK = CharTokenizer()


def test_build_prompt_token_for_token():
    demos = [(TOK.encode("ACG"), A_ID), (TOK.encode("TT"), N_ID)]
    prompt = build_prompt(TOK.encode("GCA"), demos, query_label=N_ID, shots=1)
    # X1 [SEP] Y1 [SEP] X2 [SEP] Y2 [SEP] Xq [SEP]
    expected = [A_ID, C_ID, G_ID, SEP_ID, A_ID, SEP_ID, T_ID, T_ID, SEP_ID, N_ID, SEP_ID, G_ID, C_ID, A_ID, SEP_ID]
    assert prompt.ids.tolist() == expected
    assert TOK.decode(prompt.ids) == "ACG[SEP]A[SEP]TT[SEP]N[SEP]GCA[SEP]"
    # Labels are predicted at the [SEP] before each label token, and at the final [SEP] for the query.
    assert prompt.label_positions.tolist() == [3, 8, 14]
    assert prompt.targets.tolist() == [A_ID, N_ID, N_ID]
    assert [expected[p + 1] for p in prompt.label_positions[:-1]] == [A_ID, N_ID]
    assert prompt.shots == 1 and prompt.ids.dtype == np.int64


def test_zero_shot_prompt_is_query_and_sep_without_cls_or_bos():
    prompt = build_prompt(TOK.encode("ACGTN"))
    assert TOK.decode(prompt.ids) == "ACGTN[SEP]"
    assert CLS_ID not in prompt.ids.tolist()
    assert prompt.label_positions.tolist() == [5] and prompt.targets.tolist() == [-1]


def test_prompt_length_matches_built_prompt():
    demos = [(TOK.encode("A" * n), A_ID) for n in (3, 7, 11)]
    prompt = build_prompt(TOK.encode("C" * 5), demos)
    assert len(prompt) == prompt_length([3, 7, 11], 5) == 3 + 7 + 11 + 3 * 3 + 5 + 1


def _pool(n_per_class=10, length=4, seed=0):
    # Class 0 rows are all A, class 1 rows all C, so a demonstration's label is visible in its bases.
    ids = [TOK.encode("A" * length)] * n_per_class + [TOK.encode("C" * length)] * n_per_class
    classes = [0] * n_per_class + [1] * n_per_class
    return DemoPool(ids, classes, [A_ID, N_ID], seed)


def _demos(prompt, length=4):
    """(first base, label token) of each demonstration of a prompt built from same-length rows."""
    step = length + 3
    return [(int(prompt.ids[i]), int(prompt.ids[i + length + 1])) for i in range(0, prompt.shots * 2 * step, step)]


def test_k_shots_per_class_balanced_and_labelled():
    prompt = _pool().make_prompt(TOK.encode("GGGG"), shots=3, budget=1000, stream=STREAM_TEST, key=0)
    demos = _demos(prompt)
    assert prompt.shots == 3 and len(demos) == 6
    assert sorted(demos) == [(A_ID, A_ID)] * 3 + [(C_ID, N_ID)] * 3  # every demo carries its own class's label
    assert TOK.decode(prompt.ids).endswith("[SEP]GGGG[SEP]")


def test_demonstrations_are_reproducible_shuffled_and_keyed():
    pool = _pool(n_per_class=50)
    query = TOK.encode("GGGG")
    first = pool.make_prompt(query, 4, 1000, STREAM_TEST, key=7)
    pool.make_prompt(query, 4, 1000, STREAM_TEST, key=3)  # another query in between changes nothing
    again = pool.make_prompt(query, 4, 1000, STREAM_TEST, key=7)
    assert np.array_equal(first.ids, again.ids)
    orders = {tuple(label for _, label in _demos(pool.make_prompt(query, 4, 1000, STREAM_TEST, k))) for k in range(20)}
    assert len(orders) > 1  # classes are interleaved in a shuffled order, not always the same
    other_seed = _pool(n_per_class=50, seed=1).make_prompt(query, 4, 1000, STREAM_TEST, key=7)
    other_stream = pool.make_prompt(query, 4, 1000, STREAM_TRAIN, key=7)
    assert len({first.ids.tobytes(), other_seed.ids.tobytes(), other_stream.ids.tobytes()}) >= 2


def test_query_row_is_never_its_own_demonstration():
    ids = [TOK.encode(s) for s in ("AAAA", "AAAC", "CCCC", "CCCA")]
    pool = DemoPool(ids, [0, 0, 1, 1], [A_ID, N_ID], seed=0)
    for key in range(30):
        prompt = pool.make_prompt(ids[0], 1, 1000, STREAM_TRAIN, key, query_label=A_ID, exclude=0)
        text = TOK.decode(prompt.ids)
        assert text.count("AAAA") == 1 and text.startswith(("AAAC", "CCCC", "CCCA"))
        assert prompt.targets.tolist()[-1] == A_ID


def test_too_long_prompts_use_fewer_shots_for_every_class():
    pool = _pool(n_per_class=10, length=10)
    query = TOK.encode("G" * 10)
    # each demonstration costs 10 + 3 tokens, the query 10 + 1
    budget = prompt_length([10] * 4, 10)  # room for exactly 2 shots per class
    prompt = pool.make_prompt(query, 5, budget, STREAM_TEST, key=0)
    assert prompt.shots == 2 and len(prompt) == budget
    assert sorted(label for _, label in _demos(prompt, 10)) == [A_ID, A_ID, N_ID, N_ID]
    assert pool.make_prompt(query, 5, budget - 1, STREAM_TEST, key=0).shots == 1
    assert pool.make_prompt(query, 5, 11, STREAM_TEST, key=0).shots == 0  # the bare query fits
    assert pool.make_prompt(query, 5, 10, STREAM_TEST, key=0) is None  # even the bare query does not


def test_small_classes_cap_the_shots():
    pool = DemoPool([TOK.encode("A"), TOK.encode("C"), TOK.encode("T")], [0, 1, 1], [A_ID, N_ID], seed=0)
    assert pool.max_shots == 1
    assert pool.make_prompt(TOK.encode("G"), 3, 1000, STREAM_TEST, 0).shots == 1


def test_label_tokens():
    assert default_label_tokens(2) == ["A", "N"]
    assert default_label_tokens(3) == ["A", "G", "N"]
    assert parse_label_tokens(None, 2) == [A_ID, N_ID]
    assert parse_label_tokens("G, T", 2) == [G_ID, T_ID]
    assert parse_label_tokens("[CLS],A,N", 3) == [CLS_ID, A_ID, N_ID]
    for spec, n in (("A,X", 2), ("A,A", 2), ("A,N,G", 2)):
        with pytest.raises(UsageError):
            parse_label_tokens(spec, n)
    with pytest.raises(UsageError, match="--label-tokens"):
        default_label_tokens(7)
