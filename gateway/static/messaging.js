// munggoggo gateway dashboard: the messaging panel (filled in by its own change).
"use strict";
