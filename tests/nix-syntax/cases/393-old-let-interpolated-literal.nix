let { ${"body"} = 1; }
