import numpy as np
import pytest

from genomelm.errors import FormatError
from genomelm.tokenizer import VOCAB, CharTokenizer, reverse_complement_ids


def test_official_ids():
    expected = ["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]", "A", "C", "G", "T", "N"]
    assert list(VOCAB) == expected
    assert list(VOCAB.values()) == list(range(12))


def test_encode_bases_case_iupac_and_u():
    tok = CharTokenizer()
    assert tok.encode("ACGTN").tolist() == [7, 8, 9, 10, 11]
    assert tok.encode("acgtn").tolist() == [7, 8, 9, 10, 11]
    assert tok.encode("RYSWKMBDHVryswkmbdhv").tolist() == [11] * 20
    assert tok.encode("Uu").tolist() == [10, 10]


def test_invalid_character_names_record_and_1_based_position():
    with pytest.raises(FormatError, match=r"chr7: invalid character '!' at position 103"):
        CharTokenizer().encode("AC!T", record="chr7", offset=100)


def test_encode_uint8_gives_the_ids_and_errors_of_encode():
    tok = CharTokenizer()
    text = "ACGTNacgtnRYSWKMBDHVrysbwkmdhvUu"
    assert tok.encode_uint8(text).dtype == np.uint8
    assert tok.encode_uint8(text).tolist() == tok.encode(text).tolist()
    for bad in ("ACGX", "AC\u00e9", "A\u4e00C"):
        messages = []
        for encode in (tok.encode, tok.encode_uint8):
            with pytest.raises(FormatError) as caught:
                encode(bad, record="chr9", offset=10)
            messages.append(str(caught.value))
        assert messages[0] == messages[1]


def test_reverse_complement_on_ids():
    tok = CharTokenizer()
    ids = tok.encode("AACGTN")
    assert tok.decode(reverse_complement_ids(ids)) == "NACGTT"
    batch = np.stack([tok.encode("ACGT"), tok.encode("AAAC")])
    assert [tok.decode(r) for r in reverse_complement_ids(batch)] == ["ACGT", "GTTT"]
