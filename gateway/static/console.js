// munggoggo gateway dashboard: the console panel (filled in by its own change).
"use strict";
