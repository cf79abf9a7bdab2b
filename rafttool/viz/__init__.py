"""Flow visualisation: Middlebury colour coding, a colour-wheel key and arrow overlays."""

from rafttool.viz.colorwheel import draw_wheel_legend, flow_arrows, flow_to_color, make_colorwheel

__all__ = ["draw_wheel_legend", "flow_arrows", "flow_to_color", "make_colorwheel"]
