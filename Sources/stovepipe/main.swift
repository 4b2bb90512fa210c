print("stovepipe: not wired yet")
