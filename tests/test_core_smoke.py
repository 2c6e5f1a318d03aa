import numpy as np
import pytest

import gradtensor as gt
from opcheck import OpCase, check_op

CASES = [
    OpCase("mul", lambda a, b: a * b, np.multiply, [(3, 1), (4,)]),
    OpCase("add", lambda a, b: a + b, np.add, [(2, 3), ()]),
    OpCase("exp", gt.exp, np.exp, [(2, 3)]),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check_op(case)
