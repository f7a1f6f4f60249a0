let s = { or = 1; }; in { inherit (s) or; }
