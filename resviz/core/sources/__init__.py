"""Where models come from (the first step of the pipeline): the zoo, spec files and the blocks they build, the user's Python files, and model archives. Nothing here traces or analyses."""
