// munggoggo gateway dashboard: the deadletters panel (filled in by its own change).
"use strict";
