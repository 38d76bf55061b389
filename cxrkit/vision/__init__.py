"""Image processing for chest X-rays: contour masks, transforms."""
