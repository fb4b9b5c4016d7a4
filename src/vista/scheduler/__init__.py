"""NodeScheduler: worker processes, job dispatch, device placement. No Hydra here."""

from vista.scheduler.devices import DevicePlanError, plan_devices
from vista.scheduler.inline import InlineExecutor
from vista.scheduler.node_scheduler import NodeScheduler, SchedulerSpec, WorkerStartError

__all__ = ["DevicePlanError", "InlineExecutor", "NodeScheduler", "SchedulerSpec", "WorkerStartError", "plan_devices"]
