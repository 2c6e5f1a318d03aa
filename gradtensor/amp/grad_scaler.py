"""gt.amp.GradScaler: dynamic loss scaling, with PyTorch's API and update rule.

The scaler keeps its state in one of two forms. On the host (the default): the scale and growth
tracker are Python numbers, unscale_ reads the overflow flag back once, and step() skips the
optimizer's step on the host. On the device (once a step captured by gt.cuda.graph uses the scaler):
scale, growth tracker and every optimizer's found_inf are device arrays, step() hands found_inf to
the optimizer, whose update is masked on the device (parameters and state keep their bits when it is
set), and update() applies the same rule with device ops; nothing waits for the device until
get_scale() or state_dict() reads it back. Both forms give the same numbers.
"""
import warnings

import numpy as np  # dtype names only

from .. import backend, fused
from ..tensor import Tensor

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


class GradScaler:
    """Scale the loss so small float16 gradients do not flush to zero; skip steps that overflowed.

        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)      # optional: e.g. before clip_grad_norm_
        scaler.step(optimizer)          # skipped when any gradient is inf/NaN
        scaler.update()                 # back off after an overflow, grow after growth_interval clean steps

    Inside a step captured by gt.cuda.graph the skip happens on the device: step() then returns the
    optimizer's value even for a skipped step.
    """

    def __init__(self, device="cuda", init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if enabled and str(device).startswith("cuda") and backend.cupy_module() is None:
            warnings.warn("GradScaler: CUDA is not available; loss scaling is disabled", stacklevel=2)
            enabled = False
        if growth_factor <= 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        self.device = device
        self._enabled = enabled
        self._scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._growth_tracker = 0
        self._device_state = None  # (scale: float64, growth tracker: int32) 0-d device arrays in the device form
        self._per_optimizer = {}  # id(optimizer) -> {"stage": ..., "found_inf": bool, or an int32 device flag}

    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        return self._scale_and_tracker()[0] if self._enabled else 1.0

    def get_growth_factor(self):
        return self._growth_factor

    def get_backoff_factor(self):
        return self._backoff_factor

    def get_growth_interval(self):
        return self._growth_interval

    def scale(self, outputs):
        """outputs multiplied by the current scale (a tensor, or a list/tuple of them)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        if self._on_device():
            return outputs * Tensor(self._device_state[0].astype(outputs.dtype))
        return outputs * self._scale

    def _state(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": False})

    def unscale_(self, optimizer):
        """Divide the optimizer's gradients by the scale in place, and note whether any is inf/NaN."""
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update()")
        if st["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step(); call update() first")
        grads = [p.grad.data for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self._on_device():
            scale, tracker = self._device_state
            found_inf = backend.xp(tracker).zeros_like(tracker)
            if grads:  # one multi-tensor launch per dtype on the GPU, and no read of the flag
                fused.unscale_and_flag_(grads, (1.0 / scale).astype(np.float32), found_inf)
            st["found_inf"] = found_inf
        else:  # one multi-tensor launch per dtype on the GPU, and one read of the overflow flag
            st["found_inf"] = fused.unscale_and_check_(grads, 1.0 / self._scale)
        st["stage"] = _UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """optimizer.step(...) unless a gradient overflowed; returns its result, or None when skipped."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        st = self._state(optimizer)
        if st["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update()")
        if st["stage"] == _READY:
            self.unscale_(optimizer)
        st["stage"] = _STEPPED
        found_inf = st["found_inf"]
        if self._device_state is not None:
            if getattr(optimizer, "_in_graph_mode", lambda: False)():
                return optimizer._step_skipping_if(found_inf, *args, **kwargs)
            found_inf = bool(backend.host_read(
                found_inf, f"GradScaler.step() ({type(optimizer).__name__} cannot skip a step on the device)"))
        if found_inf:
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale=None):
        """Set the scale for the next iteration: new_scale if given, else by the overflow history."""
        if not self._enabled:
            return
        on_device = self._on_device()
        if new_scale is not None:
            if on_device:
                self._device_state[0][...] = new_scale.data if isinstance(new_scale, Tensor) else float(new_scale)
            else:
                self._scale = float(new_scale.item() if hasattr(new_scale, "item") else new_scale)
        else:
            if not self._per_optimizer:
                raise RuntimeError("update(): no optimizer was stepped or unscaled since the last update()")
            found_infs = [st["found_inf"] for st in self._per_optimizer.values()]
            if on_device:
                self._update_on_device(found_infs)
            elif any(found_infs):
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._per_optimizer.clear()

    def _update_on_device(self, found_infs):
        """The update rule of update() (PyTorch's _amp_update_scale_) with device ops, in place on the
        scale and growth tracker arrays, from the optimizers' device found_inf flags."""
        scale, tracker = self._device_state
        xp = backend.xp(scale)
        found = found_infs[0]
        for other in found_infs[1:]:
            found = found | other
        found = found != 0
        counted = xp.where(found, 0, tracker + 1)
        grow = counted == self._growth_interval
        xp.multiply(scale, xp.where(found, self._backoff_factor, xp.where(grow, self._growth_factor, 1.0)), out=scale)
        tracker[...] = xp.where(grow, 0, counted)

    def state_dict(self):
        if not self._enabled:
            return {}
        scale, growth_tracker = self._scale_and_tracker()
        return {
            "scale": scale,
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": growth_tracker,
        }

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "GradScaler.load_state_dict: the state dict is empty, possibly saved from a disabled GradScaler"
            )
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        scale, growth_tracker = float(state_dict["scale"]), int(state_dict["_growth_tracker"])
        if self._device_state is None:
            self._scale, self._growth_tracker = scale, growth_tracker
        else:  # written into the arrays a captured graph reads
            self._device_state[0][...] = scale
            self._device_state[1][...] = growth_tracker

    # --- the device form (CUDA graphs; see gradtensor.cuda_graph) ---------------------------------

    def _on_device(self):
        """True when the scaler keeps its state on the device: it switches when a CUDA-graph session
        (the warm-up of gt.cuda.graph) first uses it."""
        if backend.join_graph_session(self) and self._device_state is None:
            if backend.capturing():
                backend.capture_blocker("a GradScaler first used inside the capture (it needs the eager warm-up)")
            device = backend.as_device(self.device)
            self._device_state = (backend.to_device(np.array(self._scale, dtype=np.float64), device),
                                  backend.to_device(np.array(self._growth_tracker, dtype=np.int32), device))
            for st in self._per_optimizer.values():
                st["found_inf"] = backend.to_device(np.array(st["found_inf"], dtype=np.int32), device)
        return self._device_state is not None

    def _scale_and_tracker(self):
        """(scale, growth tracker) as Python numbers (read back from the device in the device form)."""
        if self._device_state is None:
            return self._scale, self._growth_tracker
        scale, tracker = (backend.host_read(a, "GradScaler.get_scale()/state_dict()") for a in self._device_state)
        return float(scale), int(tracker)

    def _graph_snapshot(self):
        """A function restoring the host-side bookkeeping as it is now (after a failed capture)."""
        saved = {key: dict(st) for key, st in self._per_optimizer.items()}
        return lambda: setattr(self, "_per_optimizer", {key: dict(st) for key, st in saved.items()})

    def _graph_refresh(self):
        """Before a graph replay: nothing to bring to the device (all the scaler's values live there)."""

    def _leave_graph_mode(self):
        """Back to the host form (the graph wrapper gave up before capturing anything)."""
        if self._device_state is None:
            return
        self._scale, self._growth_tracker = self._scale_and_tracker()
        for st in self._per_optimizer.values():
            st["found_inf"] = bool(backend.host_read(st["found_inf"], "GradScaler (leaving the device form)"))
        self._device_state = None
