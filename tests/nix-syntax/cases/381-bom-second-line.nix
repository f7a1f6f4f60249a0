# comment
﻿1
