"""The devices' front door: WebSocket gateway, device auth, command routing, fleet simulator."""
