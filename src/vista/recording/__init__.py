from vista.recording.local import LocalRecorder
from vista.recording.progress import RoundProgress
from vista.recording.recorder import ExpRecorder, record_failure
from vista.recording.spec import RecorderSpec

__all__ = ["ExpRecorder", "LocalRecorder", "RecorderSpec", "RoundProgress", "record_failure"]
