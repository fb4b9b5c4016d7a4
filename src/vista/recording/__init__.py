from vista.recording.local import LocalRecorder
from vista.recording.recorder import ExpRecorder
from vista.recording.spec import RecorderSpec

__all__ = ["ExpRecorder", "LocalRecorder", "RecorderSpec"]
