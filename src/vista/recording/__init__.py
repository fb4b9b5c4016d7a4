from vista.recording.local import LocalRecorder
from vista.recording.spec import RecorderSpec

__all__ = ["LocalRecorder", "RecorderSpec"]
