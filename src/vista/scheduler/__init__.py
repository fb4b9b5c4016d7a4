"""Executors (process, inline, ray), worker arrangement, device placement. No Hydra here."""

from vista.scheduler.backends import BACKENDS, build_executor, plan_workers
from vista.scheduler.devices import DevicePlanError, plan_devices
from vista.scheduler.inline import InlineExecutor
from vista.scheduler.node_scheduler import NodeScheduler, WorkerStartError
from vista.scheduler.spec import RaySchedulerSpec, SchedulerSpec

__all__ = ["BACKENDS", "DevicePlanError", "InlineExecutor", "NodeScheduler", "RaySchedulerSpec", "SchedulerSpec",
           "WorkerStartError", "build_executor", "plan_devices", "plan_workers"]
