"""Mail: rendering, tracking, signed tokens, message assembly and transports."""
