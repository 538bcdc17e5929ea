"""The `quant` command: Typer commands (`commands`, the app), the console entry (`entry`), what
commands share (`util`), and the tables and JSON documents (`render`, `plan_render`). Parse, call
one library function, render one report: no business rule lives here."""
