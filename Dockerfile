FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system --create-home --uid 10001 wanotify
USER wanotify
EXPOSE 8000 8900 5555
CMD ["wanotify", "web", "--host", "0.0.0.0", "--port", "8000"]
