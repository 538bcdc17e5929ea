import numpy as np
import pytest
from hypothesis import given, strategies as st

from quantcli.errors import ArchiveError
from quantcli.codecs.bitpack import pack_bits, packed_nbytes, unpack_bits


@given(bits=st.integers(1, 16), n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_is_identity(bits, n, seed):
    codes = np.random.default_rng(seed).integers(0, 2**bits, n)
    packed = pack_bits(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_nbytes(n, bits) == (n * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, bits, n), codes)


@pytest.mark.parametrize("bits", range(1, 17))
def test_bit_order_is_little_endian_stream(bits):
    """Code i occupies stream bits [i*b, (i+1)*b), least significant first (docs/FORMAT.md)."""
    codes = np.random.default_rng(bits).integers(0, 2**bits, 21)
    stream = np.array([(int(c) >> k) & 1 for c in codes for k in range(bits)], dtype=np.uint8)
    np.testing.assert_array_equal(pack_bits(codes, bits), np.packbits(stream, bitorder="little"))


def test_known_bytes():
    assert pack_bits(np.array([1, 2, 3]), 4).tolist() == [0x21, 0x03]
    assert pack_bits(np.array([1, 1, 1, 1, 1, 1, 1, 1]), 1).tolist() == [0xFF]
    assert pack_bits(np.array([5, 3]), 3).tolist() == [0b011101]


def test_unpack_rejects_wrong_length():
    with pytest.raises(ArchiveError, match="expected 2"):
        unpack_bits(np.zeros(3, np.uint8), 4, 4)


def test_bits_out_of_range():
    with pytest.raises(ValueError):
        pack_bits(np.zeros(3, np.uint8), 17)
