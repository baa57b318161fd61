"""Never imported by runtime code: sandbox, embedded servers, processes, demo, bench."""
