"""Sensor sources: every driver yields slam frame types and knows nothing of SLAM."""
