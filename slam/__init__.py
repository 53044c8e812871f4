"""Neural implicit SDF SLAM engine."""
