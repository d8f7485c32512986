"""Durations as text; free of TensorFlow, so that the sweep launcher can use it too."""


def format_duration(seconds):
    """Seconds as H:MM:SS (a negative duration as 0:00:00)."""
    seconds = int(max(seconds, 0))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
