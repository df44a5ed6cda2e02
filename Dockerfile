# One image for every rushgate process; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY intake intake
COPY reservation reservation
COPY orders orders
COPY persistence persistence
COPY rushgate rushgate
COPY lua lua
RUN pip install --no-cache-dir . && useradd --system rushgate
USER rushgate
EXPOSE 8000
ENTRYPOINT ["rushgate"]
CMD ["serve", "--host", "0.0.0.0", "--workers", "2"]
