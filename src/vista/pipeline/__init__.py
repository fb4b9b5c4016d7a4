"""Pipeline core: Task, Pipeline, FLContext, EventManager, event_pipeline, TaskProtocol."""

from vista.pipeline.context import FLContext
from vista.pipeline.event_pipeline import EventPipeline, Step
from vista.pipeline.events import EventManager, JobMonitor
from vista.pipeline.executor import Executor, Placement, no_callback
from vista.pipeline.pipeline import JobFailedError, Jobs, Pipeline, RunInterrupted, Task, payload_nbytes
from vista.pipeline.protocol import JobRequest, JobResult, JobSpec, JobState

__all__ = [
    "EventManager", "EventPipeline", "Executor", "FLContext", "JobFailedError", "JobMonitor",
    "JobRequest", "JobResult", "JobSpec", "JobState", "Jobs", "Pipeline", "Placement", "RunInterrupted", "Step",
    "Task", "no_callback", "payload_nbytes",
]
