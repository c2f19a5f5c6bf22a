from controller.ipam.freespace import FreeSpace


def test_lowest_order_reuses_lowest_free() -> None:
    fs = FreeSpace([(10, 14)])
    assert [fs.allocate_lowest() for _ in range(3)] == [10, 11, 12]
    assert fs.release(11)
    assert fs.allocate_lowest() == 11
    assert fs.allocate_lowest() == 13


def test_least_recently_released_hands_out_never_used_first_then_oldest_release() -> None:
    fs = FreeSpace([(0, 4)])
    assert [fs.allocate_least_recently_released() for _ in range(3)] == [0, 1, 2]
    fs.release(1)
    fs.release(0)
    assert fs.allocate_least_recently_released() == 3
    assert fs.allocate_least_recently_released() == 4
    assert fs.allocate_least_recently_released() == 1
    assert fs.allocate_least_recently_released() == 0
    assert fs.allocate_least_recently_released() is None
    assert fs.allocate_lowest() is None


def test_allocate_given_and_contains_and_counts() -> None:
    fs = FreeSpace([(0, 9), (20, 29)])
    assert fs.free_count == 20
    assert fs.allocate(5)
    assert not fs.allocate(5)
    assert not fs.allocate(15)
    assert 5 not in fs and 4 in fs and 6 in fs
    assert fs.intervals() == [(0, 4), (6, 9), (20, 29)]
    assert fs.release(5)
    assert not fs.release(5)
    assert fs.free_count == 20
    assert fs.allocate(5)


def test_adjacent_intervals_merge_and_counts_are_exact_for_huge_spaces() -> None:
    fs = FreeSpace([(0, 4), (5, 9)])
    assert fs.intervals() == [(0, 9)]
    big = FreeSpace([(1, 2**64 - 1)])
    assert big.free_count == 2**64 - 1
    assert big.allocate(2**63)
    assert big.free_count == 2**64 - 2
    assert len(big.intervals()) == 2


def test_reserve_span() -> None:
    fs = FreeSpace([(0, 99)])
    fs.allocate(50)
    assert fs.reserve(10, 60) == 50
    assert fs.intervals() == [(0, 9), (61, 99)]
    assert fs.free_count == 49


def test_restore_release_order_moves_addresses_to_the_back() -> None:
    fs = FreeSpace([(0, 4)])
    fs.restore_release_order([0, 7])
    assert fs.released_order() == [0]
    assert [fs.allocate_least_recently_released() for _ in range(5)] == [1, 2, 3, 4, 0]
