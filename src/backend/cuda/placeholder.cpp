// The CUDA backend's host side lands here (handles, arena, graphs).
