"""Marquee: a Kubernetes-native movie recommendation platform."""
