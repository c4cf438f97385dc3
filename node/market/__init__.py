"""The prover market: a sans-IO protocol core (`core`), its events and effects (`events`), the
award choice (`select`) and the trio service that carries the effects out (`service`)."""
