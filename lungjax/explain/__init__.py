"""Explanations: Grad-CAM (gradcam), the --mode=explain overlays and gallery (gallery), the shortcut check
with lungs hidden or shown alone (shortcuts)."""
