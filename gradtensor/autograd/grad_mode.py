"""Global autograd switches: grad recording and anomaly detection."""
import functools


class _State:
    __slots__ = ("grad_enabled", "anomaly", "observer", "backward_on_arrays")

    def __init__(self):
        self.grad_enabled = True
        self.anomaly = False
        # True while the engine runs a backward formula on raw arrays: saved tensors then read as arrays
        self.backward_on_arrays = False
        # called as observer(args, needs) for every op that sees an input requiring grad (checkpoint uses it
        # to find the tensors a region reads from outside, e.g. parameters)
        self.observer = None


state = _State()


def is_grad_enabled():
    return state.grad_enabled


class _GradModeContext:
    """Base for context managers that also work as decorators."""

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__(*self._args):
                return fn(*args, **kwargs)

        return wrapper

    _args = ()

    def __enter__(self):
        self._prev = state.grad_enabled
        state.grad_enabled = self._mode

    def __exit__(self, *exc):
        state.grad_enabled = self._prev
        return False


class no_grad(_GradModeContext):
    """Disable gradient recording inside the block (or the decorated function)."""

    _mode = False


class enable_grad(_GradModeContext):
    """Enable gradient recording inside the block, e.g. within no_grad."""

    _mode = True


class set_grad_enabled(_GradModeContext):
    """Set gradient recording on or off; applies at once, and is undone on leaving a with-block."""

    def __init__(self, mode):
        self._mode = bool(mode)
        self._args = (mode,)
        self._outer = state.grad_enabled
        state.grad_enabled = self._mode

    def __call__(self, fn):
        state.grad_enabled = self._outer  # as a decorator it must not change the mode now
        return super().__call__(fn)

    def __enter__(self):
        self._prev = self._outer
        state.grad_enabled = self._mode


class detect_anomaly:
    """Raise at the first NaN or inf that a forward or backward op produces, naming the op."""

    def __init__(self, check_nan=True):
        self.check_nan = check_nan

    def __enter__(self):
        self._prev = state.anomaly
        state.anomaly = self.check_nan

    def __exit__(self, *exc):
        state.anomaly = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)

        return wrapper
