"""Physics simulator of a multi-cup vacuum pump unit speaking the cupmon protocol."""
