"""The archive: its container and manifest (`container`), how logical arrays are stored
(`storage`: bitpack or a codec), its exact header size (`sizing`), and reading it back
(`loader`: arrays, `dequant`: files, `inspection`: reports and verification)."""
