"""roitrack: real-time social-media ROI and attribution on Kafka, Faust and Redis."""

__version__ = "0.1.0"
