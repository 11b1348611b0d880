"""A NaVILA-Bench-compatible VLM server on the `Engine` (`nvila-core serve`).

`protocol` holds the wire format and NaVILA-Bench's reply parser (no torch, so clients and tests
import it cheaply); `server` the TCP server (framing, limits, timeouts, access control, logging);
`engine_responder` the model behind it. Never imports rclpy or nvila_nav.
"""
