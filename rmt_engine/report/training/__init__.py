"""The report's training section: ``numbers`` (tables and rates from the training fields),
``figures`` (the PNGs drawn from those numbers) and ``section`` (composes both into the Markdown
section). Imports flow numbers <- figures <- section.
"""
